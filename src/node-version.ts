/**
 * The Node.js idjag needs: 22.14. better-sqlite3's addon is built for Node-API 10, which earlier Node 22
 * releases lack; they do not refuse it but crash (a segmentation fault) when a database opens. kysely and the
 * code itself need Node 22. Imports nothing, so it can run before anything that would crash.
 */
export const NEEDED_NODE = '22.14.0';

export function nodeTooOld(version: string = process.versions.node): boolean {
  const have = version.split('.').map((n) => Number.parseInt(n, 10) || 0);
  const need = NEEDED_NODE.split('.').map(Number);
  for (let i = 0; i < need.length; i++) {
    if ((have[i] ?? 0) !== need[i]) return (have[i] ?? 0) < need[i]!;
  }
  return false;
}

export function nodeTooOldMessage(version: string = process.versions.node, executable: string = process.execPath): string {
  return `idjag needs Node.js ${NEEDED_NODE} or newer; this is Node.js ${version} (${executable}). Install Node.js ${NEEDED_NODE} or later and run it again.`;
}
