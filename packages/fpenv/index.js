// The compiled binding (build/Release/specforge_fpenv.node), or an error that says how to get it.
'use strict';
const path = require('node:path');

try {
  module.exports = require(path.join(__dirname, 'build', 'Release', 'specforge_fpenv.node'));
} catch (e) {
  const err = new Error(
    `specforge-fpenv is not built (${e.code === 'MODULE_NOT_FOUND' ? 'a C toolchain was missing when it was installed' : e.message}): ` +
      'install one (Debian/Ubuntu: apt-get install gcc g++ make python3), then run npm rebuild specforge-fpenv',
  );
  err.code = 'SPECFORGE_FPENV_NOT_BUILT';
  throw err;
}
