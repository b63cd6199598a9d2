import type { DB } from '../db/index.ts';
import { activeKey, loadKeySet } from '../oidc/keys.ts';
import type { ConformanceIdp } from './as-kit.ts';

/**
 * idjag as the IdP of the conformance kit: its issuer and its active ID-JAG key, the one its JWKS publishes,
 * so an AS that trusts idjag can verify the valid case exactly as it verifies real ID-JAGs. Read fresh on each
 * call: a rotation takes effect for the next run.
 */
export async function idjagConformanceIdp(db: DB, issuer: string): Promise<ConformanceIdp> {
  const key = activeKey(await loadKeySet(db), 'id_jag');
  return { issuer, signingKey: { kid: key.kid, alg: key.alg, privateJwk: key.privateJwk } };
}
