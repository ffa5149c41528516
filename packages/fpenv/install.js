// npm's install script: builds the binding with node-gyp. It is optional for specforge (without it the
// training threads compute subnormal floats at full IEEE cost, slower late in training but with the same
// results to rounding), so when a compiler or node-gyp is missing this says what to install and still succeeds.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const HOW = 'install a C toolchain (Debian/Ubuntu: apt-get install gcc g++ make python3), then run npm rebuild specforge-fpenv';

function skip(why) {
  console.warn(`specforge-fpenv: not built: ${why}; ${HOW}`);
  process.exit(0);
}

// npm hands its own node-gyp to install scripts; otherwise the one beside this node's npm.
const prefix = path.resolve(path.dirname(process.execPath), '..');
const gyp = [process.env.npm_config_node_gyp, path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')].find(
  (f) => f && fs.existsSync(f),
);
if (!gyp) skip('node-gyp not found');

// Headers of the running node, installed beside it: node-gyp would otherwise download them.
const args = [gyp, 'rebuild'];
if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const r = spawnSync(process.execPath, args, { cwd: __dirname, stdio: 'inherit' });
if (r.status !== 0) skip(`node-gyp rebuild failed (status ${r.status})`);
