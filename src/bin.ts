#!/usr/bin/env node
/**
 * `npx idjag`: the same IdP as `npm start`, from the installed package, on the user's own Node. The version is
 * checked first, before anything else is loaded: an older Node gets one line naming the version it needs instead
 * of a crash inside a dependency (see src/node-version.ts).
 */
import { nodeTooOld, nodeTooOldMessage } from './node-version.ts';

if (nodeTooOld()) {
  console.error(nodeTooOldMessage());
  process.exit(1);
}

// imported only now, so that an old Node never loads it
import('./main.ts').then(({ main }) => main()).catch((err: unknown) => {
  console.error('idjag failed to start:', err instanceof Error ? err.message : err);
  process.exit(1);
});
