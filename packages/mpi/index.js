// The compiled binding (build/Release/specforge_mpi.node), or an error that says how to get it.
'use strict';
const path = require('node:path');

try {
  module.exports = require(path.join(__dirname, 'build', 'Release', 'specforge_mpi.node'));
} catch (e) {
  const err = new Error(
    `specforge-mpi is not built (${e.code === 'MODULE_NOT_FOUND' ? 'Open MPI or a C++ toolchain was missing when it was installed' : e.message}): ` +
      'install Open MPI (Debian/Ubuntu: apt-get install libopenmpi-dev openmpi-bin g++ make python3), then run npm rebuild specforge-mpi',
  );
  err.code = 'SPECFORGE_MPI_NOT_BUILT';
  throw err;
}
