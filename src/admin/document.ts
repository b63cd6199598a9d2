import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { now, type DB } from '../db/index.ts';
import { hashSecret, verifySecret } from '../oidc/secrets.ts';

/**
 * The configuration document: the shape of `seed/*.json` and of the admin's policy-as-code export and
 * import. Validated at the boundary; everything below works on the parsed, typed value.
 */
const Name = z.string().trim().min(1).max(200);

export const GroupDoc = z.strictObject({
  name: z.string().trim().regex(/^[A-Za-z0-9._-]{1,100}$/, 'group names use letters, digits, dot, dash and underscore'),
  description: z.string().max(500).optional(),
});

export const UserDoc = z.strictObject({
  username: z.string().trim().regex(/^[A-Za-z0-9._@-]{1,200}$/, 'usernames use letters, digits and . _ @ -'),
  sub: z.string().trim().min(1).max(255).optional(),
  password: z.string().min(1).max(1024).optional(),
  email: z.email().optional(),
  email_verified: z.boolean().optional(),
  name: Name.optional(),
  disabled: z.boolean().optional(),
  groups: z.array(z.string()).optional(),
});

export const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'] as const;

export const ClientDoc = z.strictObject({
  client_id: z.string().trim().regex(/^[A-Za-z0-9._~:/-]{1,200}$/, 'client ids use letters, digits and . _ ~ : / -'),
  client_secret: z.string().min(8).max(1024).optional(),
  client_name: Name.optional(),
  first_party: z.boolean().optional(),
  disabled: z.boolean().optional(),
  redirect_uris: z.array(z.url()).optional(),
  post_logout_redirect_uris: z.array(z.url()).optional(),
  grant_types: z.array(z.string().min(1)).optional(),
  response_types: z.array(z.string().min(1)).optional(),
  token_endpoint_auth_method: z.enum(AUTH_METHODS).optional(),
  jwks_uri: z.url().optional(),
  jwks: z.object({ keys: z.array(z.record(z.string(), z.unknown())) }).optional(),
  scope: z.string().optional(),
});

export const ConfigDocument = z.strictObject({
  groups: z.array(GroupDoc).default([]),
  users: z.array(UserDoc).default([]),
  clients: z.array(ClientDoc).default([]),
});

export type ConfigDocument = z.infer<typeof ConfigDocument>;
export type ClientDoc = z.infer<typeof ClientDoc>;

/** `${ISSUER}` in any string of the document stands for the configured issuer, so a seed follows the base URL. */
export function substitute<T>(value: T, vars: Record<string, string>): T {
  if (typeof value === 'string') return value.replace(/\$\{([A-Z_]+)\}/g, (m, k: string) => vars[k] ?? m) as T;
  if (Array.isArray(value)) return value.map((v) => substitute(v, vars)) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, vars)])) as T;
  }
  return value;
}

export function parseDocument(raw: unknown, vars: Record<string, string> = {}): ConfigDocument {
  return ConfigDocument.parse(substitute(raw, vars));
}

/** Client metadata as the provider reads it: everything but our own bookkeeping fields and the secret. */
export function clientMetadata(doc: ClientDoc): Record<string, unknown> {
  const { client_id: _id, client_secret: _secret, first_party: _fp, disabled: _d, ...metadata } = doc;
  return metadata;
}

/** A secret is re-hashed only when it changed, so applying the same document twice changes nothing. */
async function secretHash(secret: string | undefined, current: string | null | undefined): Promise<string | null | undefined> {
  if (secret === undefined) return current;
  if (current && (await verifySecret(secret, current))) return current;
  return hashSecret(secret);
}

/**
 * Applies a document: creates what is missing and updates what is declared, in one transaction. Idempotent.
 * Entities the document does not name are left alone.
 */
export async function applyDocument(db: DB, doc: ConfigDocument): Promise<void> {
  // Hash outside the transaction: scrypt is slow and must not hold the database.
  const existingUsers = new Map((await db.selectFrom('users').select(['username', 'sub', 'password_hash']).execute()).map((u) => [u.username, u]));
  const existingClients = new Map((await db.selectFrom('clients').select(['client_id', 'secret_hash']).execute()).map((c) => [c.client_id, c]));
  const userHashes = await Promise.all(doc.users.map((u) => secretHash(u.password, existingUsers.get(u.username)?.password_hash)));
  const clientHashes = await Promise.all(doc.clients.map((c) => secretHash(c.client_secret, existingClients.get(c.client_id)?.secret_hash)));
  const at = now();

  await db.transaction().execute(async (trx) => {
    for (const g of doc.groups) {
      await trx.insertInto('groups').values({ name: g.name, description: g.description ?? null, created_at: at })
        .onConflict((oc) => oc.column('name').doUpdateSet({ description: g.description ?? null })).execute();
    }
    for (const [i, u] of doc.users.entries()) {
      const existing = existingUsers.get(u.username);
      const sub = existing?.sub ?? u.sub ?? randomUUID();
      const fields = {
        email: u.email ?? null,
        email_verified: (u.email_verified ?? Boolean(u.email)) ? 1 : 0,
        name: u.name ?? null,
        disabled: u.disabled ? 1 : 0,
        password_hash: userHashes[i] ?? null,
        updated_at: at,
      };
      if (existing) await trx.updateTable('users').set(fields).where('sub', '=', sub).execute();
      else await trx.insertInto('users').values({ sub, username: u.username, created_at: at, ...fields }).execute();
      if (u.groups) {
        for (const name of u.groups) {
          await trx.insertInto('groups').values({ name, description: null, created_at: at })
            .onConflict((oc) => oc.column('name').doNothing()).execute();
        }
        await trx.deleteFrom('group_members').where('user_sub', '=', sub).execute();
        if (u.groups.length) {
          await trx.insertInto('group_members').values(u.groups.map((group_name) => ({ group_name, user_sub: sub }))).execute();
        }
      }
    }
    for (const [i, c] of doc.clients.entries()) {
      const fields = {
        metadata: JSON.stringify(clientMetadata(c)),
        secret_hash: clientHashes[i] ?? null,
        first_party: c.first_party ? 1 : 0,
        disabled: c.disabled ? 1 : 0,
        updated_at: at,
      };
      await trx.insertInto('clients').values({ client_id: c.client_id, created_at: at, ...fields })
        .onConflict((oc) => oc.column('client_id').doUpdateSet(fields)).execute();
    }
  });
}
