import { createHash, randomUUID } from 'node:crypto';
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

const Scope = z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, 'scope tokens are printable ASCII without spaces, quotes or backslashes (RFC 6749 §3.3)');
const Uri = z.string().refine((v) => URL.canParse(v) && !v.includes('#'), 'must be an absolute URI without a fragment');

export const McpServerDoc = z.strictObject({
  resource: Uri,
  name: Name,
  scopes: z.array(Scope).default([]),
  enabled: z.boolean().optional(),
});

export const ResourceServerDoc = z.strictObject({
  issuer: Uri,
  name: Name,
  aliases: z.array(Uri).default([]),
  enabled: z.boolean().optional(),
  mcp_servers: z.array(McpServerDoc).default([]),
});

export const MAX_ID_JAG_LIFETIME = 3600;

export const Who = z.union([
  z.literal('everyone'),
  z.strictObject({ groups: z.array(z.string().min(1)).min(1) }),
  z.strictObject({ users: z.array(z.string().min(1)).min(1) }),
]);

export const RuleDoc = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, 'rule ids use letters, digits, dot, dash and underscore').optional(),
  description: z.string().max(500).optional(),
  client_id: z.string().min(1),
  audience: Uri,
  /** omitted: the rule covers the whole Resource AS */
  resource: Uri.optional(),
  who: Who,
  scopes: z.array(Scope).min(1, 'a rule must allow at least one scope'),
  default_scopes: z.array(Scope).default([]),
  rs_client_id: z.string().min(1).max(255).optional(),
  lifetime: z.number().int().min(1).max(MAX_ID_JAG_LIFETIME, `at most ${MAX_ID_JAG_LIFETIME} s`).default(300),
  max_auth_age: z.number().int().min(0).optional(),
  enabled: z.boolean().optional(),
}).refine((r) => r.default_scopes.every((s) => r.scopes.includes(s)), { message: 'default_scopes must be a subset of scopes', path: ['default_scopes'] });

export const ConfigDocument = z.strictObject({
  groups: z.array(GroupDoc).default([]),
  users: z.array(UserDoc).default([]),
  clients: z.array(ClientDoc).default([]),
  resource_servers: z.array(ResourceServerDoc).default([]),
  rules: z.array(RuleDoc).default([]),
});

export type RuleDoc = z.infer<typeof RuleDoc>;

/** A document that parses but does not fit the database (unknown client, scope the server does not define...). */
export class DocumentError extends Error {
  readonly path: (string | number)[];
  constructor(path: (string | number)[], message: string) {
    super(`${path.join('.')}: ${message}`);
    this.path = path;
  }
}

/** Rules without an id get one derived from what they say, so applying a seed twice finds the same rule. */
export function ruleId(r: RuleDoc): string {
  if (r.id) return r.id;
  const who = r.who === 'everyone' ? 'everyone' : JSON.stringify(r.who);
  return `rule-${createHash('sha256').update([r.client_id, r.audience, r.resource ?? '*', who].join('\n')).digest('base64url').slice(0, 16)}`;
}

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
export async function applyDocument(db: DB, doc: ConfigDocument, actor = 'seed'): Promise<void> {
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
    for (const [i, rs] of doc.resource_servers.entries()) {
      const existing = await trx.selectFrom('resource_servers').select('id').where('issuer', '=', rs.issuer).executeTakeFirst();
      const id = existing?.id ?? randomUUID();
      const fields = { name: rs.name, enabled: rs.enabled === false ? 0 : 1, updated_at: at };
      if (existing) await trx.updateTable('resource_servers').set(fields).where('id', '=', id).execute();
      else await trx.insertInto('resource_servers').values({ id, issuer: rs.issuer, created_at: at, ...fields }).execute();
      await trx.deleteFrom('resource_server_aliases').where('resource_server_id', '=', id).execute();
      for (const alias of rs.aliases) {
        const taken = await trx.selectFrom('resource_servers').select('id').where('issuer', '=', alias).executeTakeFirst();
        if (taken) throw new DocumentError(['resource_servers', i, 'aliases'], `${alias} is already the issuer of another Resource AS`);
        await trx.insertInto('resource_server_aliases').values({ alias, resource_server_id: id })
          .onConflict((oc) => oc.column('alias').doUpdateSet({ resource_server_id: id })).execute();
      }
      for (const m of rs.mcp_servers) {
        const mcpFields = { name: m.name, resource_server_id: id, scopes: JSON.stringify(m.scopes), enabled: m.enabled === false ? 0 : 1, updated_at: at };
        await trx.insertInto('mcp_servers').values({ id: randomUUID(), resource: m.resource, created_at: at, ...mcpFields })
          .onConflict((oc) => oc.column('resource').doUpdateSet(mcpFields)).execute();
      }
    }
    for (const [i, r] of doc.rules.entries()) {
      const path = ['rules', i];
      const client = await trx.selectFrom('clients').select('client_id').where('client_id', '=', r.client_id).executeTakeFirst();
      if (!client) throw new DocumentError([...path, 'client_id'], `unknown client ${r.client_id}`);
      const rs = await trx.selectFrom('resource_servers').select('id').where('issuer', '=', r.audience).executeTakeFirst();
      if (!rs) throw new DocumentError([...path, 'audience'], `unknown Resource AS ${r.audience}`);
      let mcpServerId: string | null = null;
      if (r.resource) {
        const mcp = await trx.selectFrom('mcp_servers').select(['id', 'resource_server_id', 'scopes']).where('resource', '=', r.resource).executeTakeFirst();
        if (!mcp || mcp.resource_server_id !== rs.id) throw new DocumentError([...path, 'resource'], `${r.resource} is not an MCP server of ${r.audience}`);
        const defined = JSON.parse(mcp.scopes) as string[];
        const undefinedScopes = r.scopes.filter((s) => !defined.includes(s));
        if (undefinedScopes.length) throw new DocumentError([...path, 'scopes'], `${undefinedScopes.join(' ')} not defined by ${r.resource} (it defines ${defined.join(' ') || 'none'})`);
        mcpServerId = mcp.id;
      }
      let subjects: string[] = [];
      if (r.who !== 'everyone' && 'users' in r.who) {
        const users = await trx.selectFrom('users').select(['sub', 'username']).where('username', 'in', r.who.users).execute();
        const missing = r.who.users.filter((u) => !users.some((x) => x.username === u));
        if (missing.length) throw new DocumentError([...path, 'who', 'users'], `unknown users ${missing.join(', ')}`);
        subjects = r.who.users.map((u) => users.find((x) => x.username === u)!.sub);
      } else if (r.who !== 'everyone') {
        subjects = r.who.groups;
      }
      const id = ruleId(r);
      const fields = {
        client_id: r.client_id,
        resource_server_id: rs.id,
        mcp_server_id: mcpServerId,
        subject_kind: r.who === 'everyone' ? 'everyone' as const : 'users' in r.who ? 'users' as const : 'groups' as const,
        subjects: JSON.stringify(subjects),
        scopes: JSON.stringify(r.scopes),
        default_scopes: JSON.stringify(r.default_scopes),
        rs_client_id: r.rs_client_id ?? null,
        lifetime: r.lifetime,
        max_auth_age: r.max_auth_age ?? null,
        enabled: r.enabled === false ? 0 : 1,
        description: r.description ?? null,
        updated_at: at,
        updated_by: actor,
      };
      await trx.insertInto('policy_rules').values({ id, created_at: at, created_by: actor, ...fields })
        .onConflict((oc) => oc.column('id').doUpdateSet(fields)).execute();
    }
  });
}
