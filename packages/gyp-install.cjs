// The install step both optional addons (mpi/, fpenv/) share: node-gyp rebuild in the package's folder. The
// addons are optional for specforge, so whatever is missing (a prerequisite, a compiler, node-gyp) is
// printed with what to install, and the install still succeeds.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

/** Builds the addon in `dir`; `missing()` names an absent prerequisite (or returns null) before the build. */
function buildAddon(dir, name, how, missing = () => null) {
  const skip = (why) => {
    console.warn(`${name}: not built: ${why}; ${how}`);
    process.exit(0);
  };
  const absent = missing();
  if (absent) skip(absent);
  // npm hands its own node-gyp to install scripts; otherwise the one beside this node's npm.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  const gyp = [process.env.npm_config_node_gyp, path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')].find(
    (f) => f && fs.existsSync(f),
  );
  if (!gyp) skip('node-gyp not found');
  // Headers of the running node, installed beside it: node-gyp would otherwise download them.
  const args = [gyp, 'rebuild'];
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
  const r = spawnSync(process.execPath, args, { cwd: dir, stdio: 'inherit' });
  if (r.status !== 0) skip(`node-gyp rebuild failed (status ${r.status})`);
}

module.exports = { buildAddon };
