// Preloaded (node --import) into a specforge process by the tests to simulate a full disk: every write into
// a file whose path matches $SPECFORGE_TEST_DISK_FULL (a regular expression) fails with ENOSPC, as write()
// does on a full disk (the system's message names no file).
import fs from 'node:fs';

const pattern = new RegExp(process.env.SPECFORGE_TEST_DISK_FULL ?? '(?!)');
const doomed = new Set();
const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
const { openSync, closeSync, writeSync, appendFileSync } = fs;

fs.openSync = (p, ...rest) => {
  const fd = openSync(p, ...rest);
  if (pattern.test(String(p))) doomed.add(fd);
  return fd;
};
fs.closeSync = (fd) => {
  doomed.delete(fd);
  return closeSync(fd);
};
fs.writeSync = (fd, ...rest) => {
  if (doomed.has(fd)) throw enospc();
  return writeSync(fd, ...rest);
};
fs.appendFileSync = (p, ...rest) => {
  if (pattern.test(String(p))) throw enospc();
  return appendFileSync(p, ...rest);
};
