import { nodeTooOld, nodeTooOldMessage } from '../node-version.ts';

// Imported first by the testing entry point, so it runs before better-sqlite3 is loaded (see src/node-version.ts).
if (nodeTooOld()) throw new Error(nodeTooOldMessage());
