import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import type { DB } from '../db/index.ts';

export const DEMO_KEY_SETTING = 'demo_as.signing_key';
const ACCESS_TOKEN_ALG = 'ES256';

export type SigningKeyObject = Awaited<ReturnType<typeof importJWK>>;

export interface DemoSigningKey {
  kid: string;
  alg: typeof ACCESS_TOKEN_ALG;
  privateKey: SigningKeyObject;
  publicJwk: JWK;
}

async function generateStoredKey(): Promise<string> {
  const { privateKey, publicKey } = await generateKeyPair(ACCESS_TOKEN_ALG, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  return JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: ACCESS_TOKEN_ALG, use: 'sig' });
}

/**
 * The key that signs the demo AS's access tokens: generated on first start and kept in the database, so
 * tokens stay verifiable across restarts and every node signs with the same key. Insert-if-absent, then read
 * back: when two nodes start together, both end up with whichever key was stored first.
 */
export async function loadDemoSigningKey(db: DB): Promise<DemoSigningKey> {
  await db.insertInto('settings').values({ key: DEMO_KEY_SETTING, value: await generateStoredKey() })
    .onConflict((oc) => oc.column('key').doNothing()).execute();
  const row = await db.selectFrom('settings').select('value').where('key', '=', DEMO_KEY_SETTING).executeTakeFirstOrThrow();
  const { d: _d, ...publicJwk } = JSON.parse(row.value) as JWK & { kid: string };
  const privateJwk = JSON.parse(row.value) as JWK;
  return { kid: publicJwk.kid, alg: ACCESS_TOKEN_ALG, privateKey: await importJWK(privateJwk, ACCESS_TOKEN_ALG), publicJwk };
}

const PURGE_EVERY_SECONDS = 60;

/**
 * Remembers accepted ID-JAG `jti`s until they expire. The primary key makes "first use wins" atomic, also
 * between nodes sharing the database: the insert that changes no row is the replay.
 */
export class JtiStore {
  readonly #db: DB;
  readonly #skew: number;
  #lastPurge = 0;

  constructor(db: DB, skew: number) {
    this.#db = db;
    this.#skew = skew;
  }

  /** true when this is the first time `jti` is presented; false for a replay. */
  async firstUse(jti: string, exp: number, now: number): Promise<boolean> {
    await this.#purgeExpired(now);
    const result = await this.#db.insertInto('demo_jti').values({ jti, exp })
      .onConflict((oc) => oc.column('jti').doNothing()).executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
  }

  /** A row may go once its ID-JAG would be refused as expired anyway, skew included. */
  async #purgeExpired(now: number): Promise<void> {
    if (now - this.#lastPurge < PURGE_EVERY_SECONDS) return;
    this.#lastPurge = now;
    await this.#db.deleteFrom('demo_jti').where('exp', '<', now - this.#skew - 1).execute();
  }
}
