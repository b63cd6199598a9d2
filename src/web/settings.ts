import { randomBytes } from 'node:crypto';
import type { DB } from '../db/index.ts';

/**
 * Cookie signing keys, when the operator did not set COOKIE_KEYS: generated once and kept in the database,
 * so sessions survive restarts and every node of a deployment signs cookies alike.
 */
export async function storedCookieKeys(db: DB): Promise<string[]> {
  const fresh = JSON.stringify([randomBytes(32).toString('base64url')]);
  await db.insertInto('settings').values({ key: 'cookie_keys', value: fresh })
    .onConflict((oc) => oc.column('key').doNothing()).execute();
  const row = await db.selectFrom('settings').select('value').where('key', '=', 'cookie_keys').executeTakeFirstOrThrow();
  return JSON.parse(row.value) as string[];
}
