import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from 'jose';
import { now, type DB } from '../db/index.ts';
import type { KeyPurpose } from '../db/schema.ts';

/** Which algorithm signs what: RS256 for ID Tokens (what every RP accepts), ES256 for ID-JAGs (the draft's example, and cheap to sign). */
export const KEY_ALGS: Record<KeyPurpose, 'RS256' | 'ES256'> = { id_token: 'RS256', id_jag: 'ES256' };

/**
 * How long a retired key stays in the JWKS: longer than anything it signed can live (ID Tokens 1 h,
 * ID-JAGs at most 1 h), plus clock skew, so no verifier ever meets a token whose key has vanished.
 */
export const RETIRED_KEY_RETENTION_SECONDS = 2 * 3600;

export interface SigningKey {
  kid: string;
  alg: string;
  purpose: KeyPurpose;
  privateJwk: JWK;
  publicJwk: JWK;
  active: boolean;
}

export interface KeySet {
  /** active keys first (the provider signs with the first key of a matching alg), then the retired ones */
  keys: SigningKey[];
  /** changes whenever a key is added or retired; cheap to compare across nodes */
  fingerprint: string;
}

async function generate(purpose: KeyPurpose) {
  const alg = KEY_ALGS[purpose];
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'RS256' ? { modulusLength: 2048 } : {}) });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  const meta = { kid, alg, use: 'sig' };
  return { kid, alg, privateJwk: { ...(await exportJWK(privateKey)), ...meta }, publicJwk: { ...publicJwk, ...meta } };
}

async function insertKey(db: DB, purpose: KeyPurpose, at: number) {
  const key = await generate(purpose);
  await db.insertInto('signing_keys').values({
    kid: key.kid, purpose, alg: key.alg,
    private_jwk: JSON.stringify(key.privateJwk), public_jwk: JSON.stringify(key.publicJwk),
    created_at: at, retired_at: null,
  }).execute();
  return key.kid;
}

/** First start: make sure each purpose has one active key. */
export async function ensureSigningKeys(db: DB): Promise<string[]> {
  const created: string[] = [];
  for (const purpose of Object.keys(KEY_ALGS) as KeyPurpose[]) {
    const active = await db.selectFrom('signing_keys').select('kid')
      .where('purpose', '=', purpose).where('retired_at', 'is', null).executeTakeFirst();
    if (!active) created.push(await insertKey(db, purpose, now()));
  }
  return created;
}

/**
 * Rotation: a new key takes over signing at once; the old one is retired but stays published for
 * RETIRED_KEY_RETENTION_SECONDS, after which it is deleted.
 */
export async function rotateSigningKeys(db: DB, purposes: KeyPurpose[] = ['id_token', 'id_jag']): Promise<{ retired: string[]; created: string[] }> {
  return db.transaction().execute(async (trx) => {
    const at = now();
    const retired: string[] = [];
    const created: string[] = [];
    for (const purpose of purposes) {
      const old = await trx.selectFrom('signing_keys').select('kid')
        .where('purpose', '=', purpose).where('retired_at', 'is', null).execute();
      await trx.updateTable('signing_keys').set({ retired_at: at })
        .where('purpose', '=', purpose).where('retired_at', 'is', null).execute();
      retired.push(...old.map((k) => k.kid));
      created.push(await insertKey(trx, purpose, at));
    }
    await purgeExpiredKeys(trx, at);
    return { retired, created };
  });
}

export async function purgeExpiredKeys(db: DB, at = now()): Promise<number> {
  const res = await db.deleteFrom('signing_keys')
    .where('retired_at', '<', at - RETIRED_KEY_RETENTION_SECONDS).executeTakeFirst();
  return Number(res.numDeletedRows);
}

export async function loadKeySet(db: DB, at = now()): Promise<KeySet> {
  const rows = await db.selectFrom('signing_keys').selectAll()
    .where((eb) => eb.or([eb('retired_at', 'is', null), eb('retired_at', '>=', at - RETIRED_KEY_RETENTION_SECONDS)]))
    .orderBy('created_at', 'desc').orderBy('kid').execute();
  const keys = rows.map((r) => ({
    kid: r.kid, alg: r.alg, purpose: r.purpose,
    privateJwk: JSON.parse(r.private_jwk) as JWK, publicJwk: JSON.parse(r.public_jwk) as JWK,
    active: r.retired_at === null,
  })).sort((a, b) => Number(b.active) - Number(a.active));
  return { keys, fingerprint: keys.map((k) => `${k.kid}:${k.active ? 'a' : 'r'}`).join(',') };
}

export function activeKey(set: KeySet, purpose: KeyPurpose): SigningKey {
  const key = set.keys.find((k) => k.purpose === purpose && k.active);
  if (!key) throw new Error(`no active ${purpose} signing key`);
  return key;
}
