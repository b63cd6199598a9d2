import { randomUUID } from 'node:crypto';
import type Provider from 'oidc-provider';
import { z } from 'zod';
import { now, type DB } from '../db/index.ts';
import { TOKEN_EXCHANGE } from '../exchange/request.ts';
import { generateSecret, hashSecret } from '../oidc/secrets.ts';
import { diff, recordChanges, type Actor } from './changes.ts';
import { Conflict, InvalidInput, NotFound, invalid, parseInput, type Issue } from './errors.ts';
import { ClientId, Name, QueryBoolean } from './fields.ts';
import { isoFromSeconds, merge } from './format.ts';
import { rulesReferencing } from './rules.ts';

/**
 * OAuth clients. The stored metadata is what the provider reads (RFC 7591 names); the secret is kept only as a
 * scrypt hash, generated here and shown once (at creation and at each rotation), never read back.
 */

export const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'] as const;
const SECRET_METHODS: readonly string[] = ['client_secret_basic', 'client_secret_post'];

const Jwks = z.object({ keys: z.array(z.record(z.string(), z.unknown())).max(20) });

const metadataFields = {
  client_name: Name,
  redirect_uris: z.array(z.url()).max(50),
  post_logout_redirect_uris: z.array(z.url()).max(50),
  grant_types: z.array(z.string().min(1).max(200)).max(10),
  response_types: z.array(z.string().min(1).max(100)).max(10),
  token_endpoint_auth_method: z.enum(AUTH_METHODS),
  jwks_uri: z.url(),
  jwks: Jwks,
  /** the scopes the client may request; `admin` opens the admin API to its client_credentials tokens */
  scope: z.string().max(1000),
  /** RFC 9449 §5.2: the client always sends DPoP proofs, so a token request without one is refused */
  dpop_bound_access_tokens: z.boolean(),
};

export const ClientDoc = z.strictObject({
  client_id: ClientId,
  /** in a document only (seed or import); never exported */
  client_secret: z.string().min(8).max(1024).optional(),
  first_party: z.boolean().optional(),
  disabled: z.boolean().optional(),
  ...Object.fromEntries(Object.entries(metadataFields).map(([k, v]) => [k, v.optional()])) as { [K in keyof typeof metadataFields]: z.ZodOptional<(typeof metadataFields)[K]> },
});
export type ClientDoc = z.infer<typeof ClientDoc>;

export const ClientCreate = ClientDoc.omit({ client_secret: true }).extend({
  /** generated when omitted */
  client_id: ClientId.optional(),
  /** confidential (default: client_secret_basic, a generated secret) or public (`none`, PKCE only) */
  type: z.enum(['confidential', 'public']).optional(),
});
export type ClientCreate = z.infer<typeof ClientCreate>;

export const ClientPatch = z.strictObject({
  first_party: z.boolean().optional(),
  disabled: z.boolean().optional(),
  ...Object.fromEntries(Object.entries(metadataFields).map(([k, v]) => [k, v.nullable().optional()])) as { [K in keyof typeof metadataFields]: z.ZodOptional<z.ZodNullable<(typeof metadataFields)[K]>> },
});
export type ClientPatch = z.infer<typeof ClientPatch>;

export const ClientFilter = z.strictObject({
  disabled: QueryBoolean.optional(),
});

/** A client as the document states it, without its secret. */
export type ClientState = Omit<ClientDoc, 'client_secret' | 'first_party' | 'disabled'> & { first_party: boolean; disabled: boolean };

export interface ClientView extends ClientState {
  type: 'confidential' | 'public';
  has_secret: boolean;
  created_at: string;
  updated_at: string;
}

/** Checks metadata the way the provider will when it loads the client; throws InvalidInput. */
export type ValidateClient = (metadata: Record<string, unknown>) => Promise<void>;

/** Client metadata as the provider reads it: everything but our own bookkeeping fields and the secret. */
export function clientMetadata(doc: Omit<ClientDoc, 'client_secret'> & { client_secret?: string | undefined }): Record<string, unknown> {
  const { client_id: _id, client_secret: _secret, first_party: _fp, disabled: _d, ...metadata } = doc;
  return metadata;
}

const authMethod = (c: Pick<ClientDoc, 'token_endpoint_auth_method'>) => c.token_endpoint_auth_method ?? 'client_secret_basic';
export const usesSecret = (c: Pick<ClientDoc, 'token_endpoint_auth_method'>) => SECRET_METHODS.includes(authMethod(c));

/** The provider's own metadata validation (oidc-provider `Client.validate`), with its message filed at the field it names. */
export function providerClientValidator(provider: () => Provider): ValidateClient {
  return async (metadata) => {
    try {
      await provider().Client.validate(metadata as never);
    } catch (err) {
      const e = err as { error?: string; error_description?: string; message?: string };
      const message = e.error_description ?? e.message ?? 'invalid client metadata';
      const field = /^([a-z_]+)\b/.exec(message)?.[1];
      // the provider's messages start with the metadata field they are about, present or missing
      throw new InvalidInput([{ path: field && field in metadataFields ? [field] : [], message }]);
    }
  };
}

/**
 * What this IdP refuses beyond the provider's own checks: a public client cannot authenticate, so it must not
 * hold a grant that issues tokens on the client's word alone, nor the admin scope.
 */
export async function checkClient(doc: Omit<ClientDoc, 'client_secret'>, validate?: ValidateClient): Promise<void> {
  const issues: Issue[] = [];
  if (authMethod(doc) === 'none') {
    (doc.grant_types ?? []).forEach((g, i) => {
      if (g === 'client_credentials' || g === TOKEN_EXCHANGE) issues.push({ path: ['grant_types', i], message: `a public client (token_endpoint_auth_method none) cannot use ${g}` });
    });
    if ((doc.scope ?? '').split(' ').includes('admin')) issues.push({ path: ['scope'], message: 'a public client cannot hold the admin scope' });
  }
  if (issues.length) throw new InvalidInput(issues);
  // The provider insists on a secret for secret-based methods; whether one is stored is checked elsewhere.
  await validate?.({ client_id: doc.client_id, ...clientMetadata(doc), ...(usesSecret(doc) ? { client_secret: 'x'.repeat(32) } : {}) });
}

type ClientRow = { client_id: string; metadata: string; secret_hash: string | null; first_party: number; disabled: number; created_at: number; updated_at: number };

function toView(r: ClientRow): ClientView {
  const metadata = JSON.parse(r.metadata) as Omit<ClientState, 'client_id' | 'first_party' | 'disabled'>;
  return {
    client_id: r.client_id,
    ...metadata,
    first_party: Boolean(r.first_party),
    disabled: Boolean(r.disabled),
    type: authMethod(metadata) === 'none' ? 'public' : 'confidential',
    has_secret: r.secret_hash !== null,
    created_at: isoFromSeconds(r.created_at),
    updated_at: isoFromSeconds(r.updated_at),
  };
}

export function clientState(v: ClientView): ClientState {
  const { type: _t, has_secret: _h, created_at: _c, updated_at: _u, ...state } = v;
  return state;
}

export async function findClient(db: DB, clientId: string): Promise<ClientView | undefined> {
  const row = await db.selectFrom('clients').selectAll().where('client_id', '=', clientId).executeTakeFirst();
  return row && toView(row);
}

export async function readClientState(db: DB, clientId: string): Promise<ClientState | undefined> {
  const v = await findClient(db, clientId);
  return v && clientState(v);
}

export async function getClient(db: DB, clientId: string): Promise<ClientView> {
  const v = await findClient(db, clientId);
  if (!v) throw new NotFound('client', clientId);
  return v;
}

export async function listClients(db: DB, f: z.infer<typeof ClientFilter> = {}): Promise<ClientView[]> {
  let q = db.selectFrom('clients').selectAll();
  if (f.disabled !== undefined) q = q.where('disabled', '=', f.disabled ? 1 : 0);
  return (await q.orderBy('client_id').execute()).map(toView);
}

/**
 * Creates or updates the client, inside the caller's transaction. `secretHash` undefined keeps the stored
 * hash; null removes it. Fields the document omits are dropped from the metadata.
 */
export async function writeClient(db: DB, c: Omit<ClientDoc, 'client_secret'>, secretHash: string | null | undefined, at = now()): Promise<void> {
  const current = await db.selectFrom('clients').select('secret_hash').where('client_id', '=', c.client_id).executeTakeFirst();
  const fields = {
    metadata: JSON.stringify(clientMetadata(c)),
    secret_hash: secretHash === undefined ? current?.secret_hash ?? null : secretHash,
    first_party: c.first_party ? 1 : 0,
    disabled: c.disabled ? 1 : 0,
    updated_at: at,
  };
  await db.insertInto('clients').values({ client_id: c.client_id, created_at: at, ...fields })
    .onConflict((oc) => oc.column('client_id').doUpdateSet(fields)).execute();
}

export type WithSecret<T> = T & { client_secret?: string };

/** Creates a client; a confidential one with a secret-based method gets a generated secret, returned here only. */
export async function createClient(db: DB, input: ClientCreate, by: Actor, validate?: ValidateClient): Promise<WithSecret<ClientView>> {
  const { type, ...rest } = input;
  const method = input.token_endpoint_auth_method ?? (type === 'public' ? 'none' : 'client_secret_basic');
  if (type && (type === 'public') !== (method === 'none')) {
    throw invalid(['token_endpoint_auth_method'], `a ${type} client cannot use ${method}`);
  }
  const doc = { ...rest, client_id: input.client_id ?? randomUUID(), token_endpoint_auth_method: method };
  await checkClient(doc, validate);
  const secret = usesSecret(doc) ? generateSecret() : undefined;
  const hash = secret === undefined ? null : await hashSecret(secret);
  return db.transaction().execute(async (trx) => {
    if (await findClient(trx, doc.client_id)) throw invalid(['client_id'], `client ${doc.client_id} already exists`);
    await writeClient(trx, doc, hash);
    const view = await getClient(trx, doc.client_id);
    await recordChanges(trx, by, [{ action: 'create', entity: 'client', entity_id: doc.client_id, before: null, after: clientState(view) }]);
    return secret === undefined ? view : { ...view, client_secret: secret };
  });
}

/**
 * Applies a change to the client's document form, validated whole. Switching to a secret-based method
 * without a stored secret generates one (returned once); switching away from one deletes the stored hash.
 */
async function changeClient(db: DB, clientId: string, change: (s: ClientState) => Record<string, unknown>, by: Actor, validate?: ValidateClient): Promise<WithSecret<ClientView>> {
  const current = await getClient(db, clientId);
  const next = parseInput(ClientDoc.omit({ client_secret: true }), change(clientState(current)));
  await checkClient(next, validate);
  const secret = usesSecret(next) && !current.has_secret ? generateSecret() : undefined;
  const hash = secret !== undefined ? await hashSecret(secret) : usesSecret(next) ? undefined : null;
  return db.transaction().execute(async (trx) => {
    const before = await readClientState(trx, clientId);
    if (!before) throw new NotFound('client', clientId);
    await writeClient(trx, next, hash);
    const view = await getClient(trx, clientId);
    const c = diff('client', clientId, before, clientState(view));
    if (c) await recordChanges(trx, by, [c]);
    return secret === undefined ? view : { ...view, client_secret: secret };
  });
}

export const updateClient = (db: DB, clientId: string, patch: ClientPatch, by: Actor, validate?: ValidateClient) =>
  changeClient(db, clientId, (s) => merge(s, patch), by, validate);

export const setClientDisabled = (db: DB, clientId: string, disabled: boolean, by: Actor) =>
  changeClient(db, clientId, (s) => ({ ...s, disabled }), by);

/** A new secret takes over at once: the old one stops working on the next request (the hash it matched is gone). */
export async function rotateClientSecret(db: DB, clientId: string, by: Actor): Promise<{ client_id: string; client_secret: string }> {
  const current = await getClient(db, clientId);
  if (!usesSecret(current)) throw invalid(['token_endpoint_auth_method'], `client ${clientId} authenticates with ${current.token_endpoint_auth_method ?? 'client_secret_basic'}, not a secret`);
  const secret = generateSecret();
  const hash = await hashSecret(secret);
  await db.transaction().execute(async (trx) => {
    const res = await trx.updateTable('clients').set({ secret_hash: hash, updated_at: now() }).where('client_id', '=', clientId).executeTakeFirst();
    if (!res.numUpdatedRows) throw new NotFound('client', clientId);
    await recordChanges(trx, by, [{ action: 'rotate_secret', entity: 'client', entity_id: clientId, before: { has_secret: current.has_secret }, after: { has_secret: true } }]);
  });
  return { client_id: clientId, client_secret: secret };
}

export async function deleteClient(db: DB, clientId: string, by: Actor): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const before = await readClientState(trx, clientId);
    if (!before) throw new NotFound('client', clientId);
    const rules = await rulesReferencing(trx, { clientId });
    if (rules.length) throw new Conflict(`client ${clientId} is named by rules ${rules.join(', ')}: delete those rules first, or disable the client`);
    await trx.deleteFrom('clients').where('client_id', '=', clientId).execute();
    await recordChanges(trx, by, [{ action: 'delete', entity: 'client', entity_id: clientId, before, after: null }]);
  });
}
