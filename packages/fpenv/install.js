// npm's install script: builds the binding with node-gyp. It is optional for specforge (without it the
// training threads compute subnormal floats at full IEEE cost, slower late in training but with the same
// results to rounding), so when a compiler or node-gyp is missing this says what to install and still succeeds.
'use strict';
const { buildAddon } = require('../gyp-install.cjs');

buildAddon(
  __dirname,
  'specforge-fpenv',
  'install a C toolchain (Debian/Ubuntu: apt-get install gcc g++ make python3), then run npm rebuild specforge-fpenv',
);
