import { z } from 'zod';
import { now, type DB } from '../db/index.ts';
import { hashSecret, verifySecret } from '../oidc/secrets.ts';
import { changeTransaction, diff, recordChanges, type Actor, type Change, type ChangeOptions } from './changes.ts';
import { checkClient, ClientDoc, clientState, listClients, readClientState, writeClient, type ValidateClient } from './clients.ts';
import { InvalidInput, type Issue } from './errors.ts';
import { DEVELOPMENT_URLS, type UrlPolicy } from './fields.ts';
import { GroupDoc, listGroups, readGroupState, writeGroup } from './groups.ts';
import { allRules, readRuleState, RuleDoc, ruleId, ruleState, writeRule } from './rules.ts';
import {
  checkRulesFit, findMcpServerByResource, findResourceServerByIssuer, listResourceServers, mcpServerState, resourceServerState,
  ResourceServerDoc, writeMcpServer, writeResourceServer,
} from './servers.ts';
import { allUsers, readUserState, UserDoc, userState, writeUser } from './users.ts';

/**
 * The configuration document: the shape of `seed/*.json` and of the admin's policy-as-code export and import.
 * Each entity's part of it is defined by that entity's module (and is also the shape the admin API reads and
 * writes), so a seed, an import and an API call go through the same validation and the same writes.
 *
 * Semantics of applying a document (seed or import):
 * - it creates what is missing and updates what it names, in one transaction: all or nothing;
 * - an entity it names is set to exactly what it says; optional fields it omits take their defaults
 *   (a client's omitted `redirect_uris` are removed, an omitted `enabled` means enabled), except secrets and
 *   passwords (an omitted one keeps the stored hash) and a user's `groups` (omitted: memberships are kept);
 * - it never deletes: entities it does not name are left alone. Deleting is an explicit API call.
 *
 * Users are part of the export (without passwords): rules can name users, and group membership is stated on
 * the user, so an export without them could not recreate the rules and groups it contains.
 */

export { AUTH_METHODS, ClientDoc, clientMetadata } from './clients.ts';
export { GroupDoc } from './groups.ts';
export { MAX_ID_JAG_LIFETIME, RuleDoc, ruleId, Who } from './rules.ts';
export { McpServerDoc, ResourceServerDoc } from './servers.ts';
export { UserDoc } from './users.ts';

/** Two entries with the same key would silently overwrite each other: name the second one instead. */
function uniqueKeys<T>(list: T[], key: (t: T) => string, path: (i: number) => (string | number)[], what: string, ctx: z.RefinementCtx): void {
  const seen = new Map<string, number>();
  list.forEach((item, i) => {
    const k = key(item);
    const first = seen.get(k);
    if (first !== undefined) ctx.addIssue({ code: 'custom', path: path(i), message: `${what} ${k} appears twice (also at index ${first})` });
    else seen.set(k, i);
  });
}

export const ConfigDocument = z.strictObject({
  groups: z.array(GroupDoc).default([]),
  users: z.array(UserDoc).default([]),
  clients: z.array(ClientDoc).default([]),
  resource_servers: z.array(ResourceServerDoc).default([]),
  rules: z.array(RuleDoc).default([]),
}).superRefine((doc, ctx) => {
  uniqueKeys(doc.groups, (g) => g.name, (i) => ['groups', i, 'name'], 'group', ctx);
  uniqueKeys(doc.users, (u) => u.username, (i) => ['users', i, 'username'], 'user', ctx);
  uniqueKeys(doc.clients, (c) => c.client_id, (i) => ['clients', i, 'client_id'], 'client', ctx);
  uniqueKeys(doc.resource_servers, (r) => r.issuer, (i) => ['resource_servers', i, 'issuer'], 'Resource AS', ctx);
  const mcps = doc.resource_servers.flatMap((r, i) => r.mcp_servers.map((m, j) => ({ resource: m.resource, path: ['resource_servers', i, 'mcp_servers', j, 'resource'] })));
  uniqueKeys(mcps, (m) => m.resource, (i) => mcps[i]!.path, 'MCP server', ctx);
  uniqueKeys(doc.rules, (r) => ruleId(r), (i) => ['rules', i, 'id'], 'rule', ctx);
});
export type ConfigDocument = z.infer<typeof ConfigDocument>;

/** `${ISSUER}` in any string of the document stands for the configured issuer, so a seed follows the base URL. */
export function substitute<T>(value: T, vars: Record<string, string>): T {
  if (typeof value === 'string') return value.replace(/\$\{([A-Z_]+)\}/g, (m, k: string) => vars[k] ?? m) as T;
  if (Array.isArray(value)) return value.map((v) => substitute(v, vars)) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, vars)])) as T;
  }
  return value;
}

/** Parses a document (throws zod's error; the admin API parses through `parseInput` for field-level 400s). */
export function parseDocument(raw: unknown, vars: Record<string, string> = {}): ConfigDocument {
  return ConfigDocument.parse(substitute(raw, vars));
}

/**
 * The whole configuration as one document that `parseDocument` accepts and `applyDocument` re-applies to the
 * same state: no client secrets, no passwords, keys sorted the same way every time.
 */
export async function exportDocument(db: DB): Promise<ConfigDocument> {
  const doc = {
    groups: (await listGroups(db)).map(({ members: _m, ...g }) => g),
    users: (await allUsers(db)).map(userState),
    clients: (await listClients(db)).map(clientState),
    resource_servers: (await listResourceServers(db)).map((rs) => ({
      ...resourceServerState(rs),
      mcp_servers: rs.mcp_servers.map(({ resource, name, scopes, enabled }) => ({ resource, name, scopes, enabled })),
    })),
    rules: (await allRules(db)).map(ruleState),
  };
  return doc as ConfigDocument;
}

/** A secret is re-hashed only when it changed, so applying the same document twice changes nothing. */
async function secretHash(secret: string | undefined, current: string | null | undefined): Promise<string | null | undefined> {
  if (secret === undefined) return undefined;
  if (current && (await verifySecret(secret, current))) return current;
  return hashSecret(secret);
}

export interface ApplyOptions extends ChangeOptions {
  /** recorded as the author of every change (default 'seed') */
  actor?: string;
  requestId?: string | undefined;
  /** the provider's client metadata validation; absent when seeding before the provider exists */
  validateClient?: ValidateClient | undefined;
  /** which URLs new Resource ASes and MCP servers may have (https only in production) */
  urls?: UrlPolicy;
}

/**
 * Applies a document in one transaction and returns what changed (creates and updates per entity, in
 * document order); the same list goes to the admin change log. With `dryRun`, the transaction runs to the end
 * and is rolled back, so the list is exactly what applying would do, every check included.
 */
export async function applyDocument(db: DB, doc: ConfigDocument, options: ApplyOptions | string = {}): Promise<Change[]> {
  const opts: ApplyOptions = typeof options === 'string' ? { actor: options } : options;
  const by: Actor = { actor: opts.actor ?? 'seed', requestId: opts.requestId };
  const urls = opts.urls ?? DEVELOPMENT_URLS;

  const issues: Issue[] = [];
  for (const [i, c] of doc.clients.entries()) {
    try {
      await checkClient(c, opts.validateClient);
    } catch (err) {
      if (!(err instanceof InvalidInput)) throw err;
      issues.push(...err.issues.map((x) => ({ ...x, path: ['clients', i, ...x.path] })));
    }
  }
  if (issues.length) throw new InvalidInput(issues);

  // Hash outside the transaction: scrypt is slow and must not hold the database.
  const storedUsers = new Map((await db.selectFrom('users').select(['username', 'password_hash']).execute()).map((u) => [u.username, u.password_hash]));
  const storedClients = new Map((await db.selectFrom('clients').select(['client_id', 'secret_hash']).execute()).map((c) => [c.client_id, c.secret_hash]));
  const userHashes = await Promise.all(doc.users.map((u) => secretHash(u.password, storedUsers.get(u.username))));
  const clientHashes = await Promise.all(doc.clients.map((c) => secretHash(c.client_secret, storedClients.get(c.client_id))));

  const changes: Change[] = [];
  await changeTransaction(db, opts, async (trx) => {
    const at = now();
    const track = async <S>(entity: Change['entity'], id: string, read: () => Promise<S | undefined>, write: () => Promise<unknown>) => {
      const before = await read();
      await write();
      const change = diff(entity, id, before, await read());
      if (change) changes.push(change);
      return before;
    };

    const groupsBefore = new Set((await trx.selectFrom('groups').select('name').execute()).map((g) => g.name));
    for (const g of doc.groups) await track('group', g.name, () => readGroupState(trx, g.name), () => writeGroup(trx, g, at));

    for (const [i, u] of doc.users.entries()) {
      const hash = userHashes[i];
      const before = await track('user', u.username, () => readUserState(trx, u.username), () => writeUser(trx, u, hash, at));
      if (before && hash !== undefined && hash !== storedUsers.get(u.username)) {
        changes.push({ action: 'reset_password', entity: 'user', entity_id: u.username, before: null, after: null });
      }
    }
    // groups a user names but the document does not declare are created on the way: record them too
    for (const g of (await trx.selectFrom('groups').select('name').orderBy('name').execute()).map((x) => x.name)) {
      if (!groupsBefore.has(g) && !doc.groups.some((d) => d.name === g)) changes.push({ action: 'create', entity: 'group', entity_id: g, before: null, after: { name: g } });
    }

    for (const [i, c] of doc.clients.entries()) {
      const hash = clientHashes[i];
      const { client_secret: _s, ...client } = c;
      const before = await track('client', c.client_id, () => readClientState(trx, c.client_id), () => writeClient(trx, client, hash, at));
      if (before && hash !== undefined && hash !== storedClients.get(c.client_id)) {
        changes.push({ action: 'rotate_secret', entity: 'client', entity_id: c.client_id, before: null, after: null });
      }
    }

    const mcpWritten: { id: string; path: (string | number)[] }[] = [];
    for (const [i, rs] of doc.resource_servers.entries()) {
      const { mcp_servers: mcps, ...server } = rs;
      let rsId = '';
      await track('resource_server', rs.issuer, async () => {
        const v = await findResourceServerByIssuer(trx, rs.issuer);
        return v && resourceServerState(v);
      }, async () => { rsId = await writeResourceServer(trx, server, at, ['resource_servers', i], urls); });
      for (const [j, m] of mcps.entries()) {
        await track('mcp_server', m.resource, async () => {
          const v = await findMcpServerByResource(trx, m.resource);
          return v && mcpServerState(v);
        }, async () => {
          const path = ['resource_servers', i, 'mcp_servers', j];
          mcpWritten.push({ id: await writeMcpServer(trx, rsId, m, at, path, urls), path });
        });
      }
    }

    for (const [i, r] of doc.rules.entries()) {
      const id = ruleId(r);
      await track('rule', id, () => readRuleState(trx, id), () => writeRule(trx, r, by.actor, at, ['rules', i]));
    }
    // Last, once the document's own rules are in: an MCP server's new scopes must still cover its rules.
    for (const m of mcpWritten) await checkRulesFit(trx, m.id, m.path);

    await recordChanges(trx, by, changes, { impact: opts.impact });
  });
  return changes;
}
