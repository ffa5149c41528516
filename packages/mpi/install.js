// npm's install script: builds the binding with node-gyp against Open MPI (mpicc's flags). MPI is optional
// for specforge, so when Open MPI, a compiler or node-gyp is missing this says what to install and still
// succeeds; specforge then runs without MPI and says the same when launched under mpirun.
'use strict';
const { spawnSync } = require('node:child_process');
const { buildAddon } = require('../gyp-install.cjs');

buildAddon(
  __dirname,
  'specforge-mpi',
  'install Open MPI and a C++ toolchain (Debian/Ubuntu: apt-get install libopenmpi-dev openmpi-bin g++ make python3), then run npm rebuild specforge-mpi',
  () => (spawnSync('mpicc', ['--showme:compile'], { encoding: 'utf8' }).status !== 0 ? 'no Open MPI compiler wrapper (mpicc --showme) on PATH' : null),
);
