import { z } from 'zod';
import { now, type DB } from '../db/index.ts';
import type { KeyPurpose } from '../db/schema.ts';
import { KEY_ALGS, loadKeySet, RETIRED_KEY_RETENTION_SECONDS, rotateSigningKeys } from '../oidc/keys.ts';
import { recordChanges, type Actor } from './changes.ts';
import { isoFromSeconds } from './format.ts';

/** The signing keys as an admin sees them: what the JWKS publishes, which key signs what, and rotation. */

export const RotateInput = z.strictObject({
  /** omitted: both (ID Tokens and ID-JAGs) */
  purposes: z.array(z.enum(Object.keys(KEY_ALGS) as [KeyPurpose, ...KeyPurpose[]])).min(1).optional(),
});

export interface KeyView {
  kid: string;
  alg: string;
  /** what it signs: id_token (RS256) or id_jag (ES256) */
  purpose: KeyPurpose;
  /** signs new tokens of its purpose; a retired key is only published, for tokens it signed before */
  active: boolean;
  created_at: string;
  retired_at: string | null;
  /** when a retired key leaves the JWKS */
  unpublished_at: string | null;
}

export interface KeysView {
  /** the key that signs each purpose now */
  signing: Record<KeyPurpose, string | null>;
  keys: KeyView[];
  /** exactly what /jwks publishes: public parts only */
  jwks: { keys: Record<string, unknown>[] };
}

export async function listKeys(db: DB): Promise<KeysView> {
  const set = await loadKeySet(db);
  const rows = await db.selectFrom('signing_keys').select(['kid', 'created_at', 'retired_at']).execute();
  const times = new Map(rows.map((r) => [r.kid, r]));
  const keys = set.keys.map((k): KeyView => {
    const t = times.get(k.kid);
    const retired = t?.retired_at ?? null;
    return {
      kid: k.kid,
      alg: k.alg,
      purpose: k.purpose,
      active: k.active,
      created_at: isoFromSeconds(t?.created_at ?? 0),
      retired_at: retired === null ? null : isoFromSeconds(retired),
      unpublished_at: retired === null ? null : isoFromSeconds(retired + RETIRED_KEY_RETENTION_SECONDS),
    };
  });
  const signing = Object.fromEntries((Object.keys(KEY_ALGS) as KeyPurpose[]).map((p) => [p, keys.find((k) => k.purpose === p && k.active)?.kid ?? null])) as Record<KeyPurpose, string | null>;
  // Built from the public JWKs only: a private parameter cannot reach this view.
  return { signing, keys, jwks: { keys: set.keys.map((k) => ({ ...k.publicJwk })) } };
}

/**
 * New keys sign from now on; the old ones stay published for RETIRED_KEY_RETENTION_SECONDS. `reload` makes
 * this node's provider pick the new keys up at once (other nodes do within their refresh interval).
 */
export async function rotateKeys(db: DB, purposes: KeyPurpose[] | undefined, by: Actor, reload: () => Promise<unknown>): Promise<{ created: string[]; retired: string[]; keys: KeysView }> {
  // rotateSigningKeys owns its transaction (the CLI shares it), so the record follows it rather than joining
  // it: a crash between the two leaves a rotation without its record, never a record without a rotation.
  const { created, retired } = await rotateSigningKeys(db, purposes);
  await recordChanges(db, by, [{
    action: 'rotate_keys', entity: 'signing_keys', entity_id: (purposes ?? Object.keys(KEY_ALGS)).join(','),
    before: { active: retired }, after: { active: created, rotated_at: isoFromSeconds(now()) },
  }]);
  await reload();
  return { created, retired, keys: await listKeys(db) };
}
