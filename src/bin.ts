#!/usr/bin/env node
/**
 * `npx idjag`: the same IdP as `npm start`, from the installed package, on the user's own Node. Everything
 * idjag loads needs Node 22 (better-sqlite3, kysely, the syntax of the code itself), so the version is checked
 * here first, before anything else is imported: an older Node gets one line naming the version it needs
 * instead of a crash somewhere inside a dependency.
 */
const NEEDED_MAJOR = 22;

const [major = 0] = process.versions.node.split('.').map(Number);
if (major < NEEDED_MAJOR) {
  console.error(`idjag needs Node.js ${NEEDED_MAJOR} or newer; this is Node.js ${process.versions.node} (${process.execPath}). `
    + `Install Node.js ${NEEDED_MAJOR} or later and run it again.`);
  process.exit(1);
}

// a dynamic import, so that nothing above depends on it
import('./main.ts').then(({ main }) => main()).catch((err: unknown) => {
  console.error('idjag failed to start:', err instanceof Error ? err.message : err);
  process.exit(1);
});
