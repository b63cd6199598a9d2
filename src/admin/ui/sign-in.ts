import { createHash, randomBytes } from 'node:crypto';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { now, type DB } from '../../db/index.ts';
import { findClientRow } from '../../db/clients.ts';
import { loadKeySet } from '../../oidc/keys.ts';
import { generateSecret, hashSecret } from '../../oidc/secrets.ts';
import { canonical, diff, recordChanges } from '../changes.ts';
import { clientState, findClient, writeClient, type ClientDoc } from '../clients.ts';

/**
 * The admin UI signs people in as an ordinary OpenID Connect client of this very provider: authorization
 * code + PKCE through idjag's own login page, then a back-channel code exchange at the token endpoint. So
 * admins log in exactly like everyone else (same password check, same provider session, same logs), and the
 * UI needs nothing from the provider's internals.
 *
 * The client is confidential. Its secret is generated once and kept in the settings table, next to the
 * cookie keys (anyone who can read that table can already sign tokens); the clients table holds only its
 * hash, as for every client. `ensureAdminUiClient` (re)writes the client whenever it differs from what the
 * UI needs (first start, another issuer, a secret rotated or the client disabled through the API), so the UI
 * always repairs its own registration before a sign-in.
 */

export const ADMIN_UI_CLIENT_ID = 'idjag-admin-ui';
export const CALLBACK_PATH = '/admin/callback';
export const SIGNED_OUT_PATH = '/admin/signed-out';
const SETTING = 'admin_ui_client';

export function adminUiClient(issuer: string): Omit<ClientDoc, 'client_secret'> {
  return {
    client_id: ADMIN_UI_CLIENT_ID,
    client_name: 'idjag admin UI',
    first_party: true,
    disabled: false,
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: [`${issuer}${CALLBACK_PATH}`],
    post_logout_redirect_uris: [`${issuer}${SIGNED_OUT_PATH}`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    scope: 'openid',
  };
}

interface StoredSecret {
  secret: string;
  hash: string;
}

async function storedSecret(db: DB): Promise<StoredSecret> {
  const read = async () => (await db.selectFrom('settings').select('value').where('key', '=', SETTING).executeTakeFirst())?.value;
  let value = await read();
  if (value === undefined) {
    const secret = generateSecret();
    const fresh: StoredSecret = { secret, hash: await hashSecret(secret) };
    // Two nodes starting at once: the first insert wins and both read it back.
    await db.insertInto('settings').values({ key: SETTING, value: JSON.stringify(fresh) }).onConflict((oc) => oc.column('key').doNothing()).execute();
    value = await read();
  }
  return JSON.parse(value!) as StoredSecret;
}

/** Makes the stored client match what the UI needs; returns its secret. Cheap when nothing changed (no hashing). */
export async function ensureAdminUiClient(db: DB, issuer: string): Promise<string> {
  const { secret, hash } = await storedSecret(db);
  const wanted = adminUiClient(issuer);
  const row = await findClientRow(db, ADMIN_UI_CLIENT_ID);
  const current = await findClient(db, ADMIN_UI_CLIENT_ID);
  const before = current && clientState(current);
  if (before && canonical(before) === canonical(wanted) && row?.secret_hash === hash) return secret;
  await db.transaction().execute(async (trx) => {
    await writeClient(trx, wanted, hash);
    const after = await findClient(trx, ADMIN_UI_CLIENT_ID);
    const change = diff('client', ADMIN_UI_CLIENT_ID, before ?? null, after && clientState(after));
    // the secret itself never reaches the change log; a repaired secret alone records nothing
    if (change) await recordChanges(trx, { actor: 'system' }, [change]);
  });
  return secret;
}

/** What the browser carries between the redirect to the provider and the callback (in a signed cookie). */
export interface PendingSignIn {
  state: string;
  nonce: string;
  verifier: string;
  /** the admin page to return to */
  next: string;
  /** epoch seconds */
  exp: number;
}

export const SIGN_IN_TTL = 600;

/** A new sign-in: the authorization request's URL (relative to the provider) and what the callback must check. */
export function beginSignIn(issuer: string, next: string): { url: string; pending: PendingSignIn } {
  const verifier = randomBytes(32).toString('base64url');
  const pending: PendingSignIn = {
    state: randomBytes(16).toString('base64url'),
    nonce: randomBytes(16).toString('base64url'),
    verifier,
    next,
    exp: now() + SIGN_IN_TTL,
  };
  const params = new URLSearchParams({
    client_id: ADMIN_UI_CLIENT_ID,
    response_type: 'code',
    redirect_uri: `${issuer}${CALLBACK_PATH}`,
    scope: 'openid',
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  });
  return { url: `/auth?${params}`, pending };
}

/** The provider's RP-initiated logout for this client, coming back to the admin UI's signed-out page. */
export function endSessionUrl(issuer: string): string {
  return `/session/end?${new URLSearchParams({ client_id: ADMIN_UI_CLIENT_ID, post_logout_redirect_uri: `${issuer}${SIGNED_OUT_PATH}` })}`;
}

export class SignInFailed extends Error {}

/**
 * The callback: the code for tokens at this provider's token endpoint (reached over `tokenBase`, the local
 * address, since the public issuer may not route back to this node), then the ID Token checked like any
 * relying party does: signature with the published keys, issuer, audience, expiry, nonce. Returns the sub.
 */
export async function completeSignIn(opts: { db: DB; issuer: string; tokenBase: string; code: string; pending: PendingSignIn }): Promise<string> {
  const secret = await ensureAdminUiClient(opts.db, opts.issuer);
  const res = await fetch(`${opts.tokenBase}/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(ADMIN_UI_CLIENT_ID)}:${encodeURIComponent(secret)}`).toString('base64')}`,
    },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code: opts.code, redirect_uri: `${opts.issuer}${CALLBACK_PATH}`, code_verifier: opts.pending.verifier,
    }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await res.json().catch(() => ({})) as { id_token?: string; error?: string; error_description?: string };
  if (!res.ok || typeof body.id_token !== 'string') throw new SignInFailed(`the code exchange failed: ${body.error ?? res.status} ${body.error_description ?? ''}`.trim());
  const keys = await loadKeySet(opts.db);
  const jwks = createLocalJWKSet({ keys: keys.keys.map((k) => k.publicJwk) });
  const { payload } = await jwtVerify(body.id_token, jwks, { issuer: opts.issuer, audience: ADMIN_UI_CLIENT_ID, algorithms: ['RS256'] })
    .catch((err: Error) => { throw new SignInFailed(`the ID Token is not valid: ${err.message}`); });
  if (payload.nonce !== opts.pending.nonce) throw new SignInFailed('the ID Token answers another sign-in (nonce mismatch)');
  if (typeof payload.sub !== 'string') throw new SignInFailed('the ID Token names no subject');
  return payload.sub;
}
