import { writeWithoutBlocking } from './immediate.ts';
import type { DB } from './index.ts';

/**
 * The token exchange's DPoP replay store (migration 0009): one row per accepted proof, shared by every node.
 * The insert is the check: the primary key lets exactly one of two racing requests write the row. A row past
 * its expiry may be taken over (the periodic cleanup may not have deleted it yet). Written on every DPoP exchange,
 * in the audit file the audit batches write too: its lock is waited for off the event loop (immediate.ts).
 */
export async function firstUseOfProof(db: DB, id: string, keepUntil: number, now: number): Promise<boolean> {
  const result = await writeWithoutBlocking(db, (via) => via.insertInto('dpop_proofs').values({ id, expires_at: keepUntil })
    .onConflict((oc) => oc.column('id').doUpdateSet({ expires_at: keepUntil }).where('dpop_proofs.expires_at', '<', now))
    .executeTakeFirst());
  return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
}

/** Deletes the proofs that are refused as stale by now; the periodic cleanup calls it. */
export async function purgeExpiredProofs(db: DB, now: number): Promise<number> {
  const result = await db.deleteFrom('dpop_proofs').where('expires_at', '<', now).executeTakeFirst();
  return Number(result.numDeletedRows);
}
