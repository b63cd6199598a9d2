import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { z } from 'zod';
import { now, type DB } from '../db/index.ts';
import type { PolicyRulesTable, SubjectKind } from '../db/schema.ts';
import { findResourceServer } from '../db/catalog.ts';
import { findClientRow } from '../db/clients.ts';
import { subsOf, usernamesOf } from '../db/users.ts';
import { MAX_LIFETIME } from '../policy/index.ts';
import { changeTransaction, diff, recordChanges, type Actor, type Change, type ChangeOptions } from './changes.ts';
import { InvalidInput, NotFound, invalid, parseInput, type Issue } from './errors.ts';
import { Description, QueryBoolean, RuleId, Scope, Uri } from './fields.ts';
import { isoFromSeconds, merge, present } from './format.ts';

/**
 * Policy rules: which client may reach which MCP server (or whole Resource AS), for whom, with which scopes.
 * A rule reads and writes in the configuration document's shape (audience and resource by URI, users by
 * username), whether it comes from the JSON API, the web UI or an import; the same checks apply to all three.
 */

export const MAX_ID_JAG_LIFETIME = MAX_LIFETIME;

export const Who = z.union([
  z.literal('everyone'),
  z.strictObject({ groups: z.array(z.string().min(1).max(100)).min(1).max(100) }),
  z.strictObject({ users: z.array(z.string().min(1).max(200)).min(1).max(100) }),
]);
export type Who = z.infer<typeof Who>;

const Scopes = z.array(Scope).min(1, 'a rule must allow at least one scope').max(100);
const DefaultScopes = z.array(Scope).max(100);
const Lifetime = z.number().int().min(1, 'at least 1 s').max(MAX_ID_JAG_LIFETIME, `at most ${MAX_ID_JAG_LIFETIME} s`);
const MaxAuthAge = z.number().int().min(0).max(366 * 24 * 3600);
const RsClientId = z.string().min(1).max(255);
/** RFC 9396 §2: a type is a string (often a URI); the exchange grants the objects of these types. */
const DetailsTypes = z.array(z.string().min(1).max(256).regex(/^[\x21-\x7e]+$/, 'authorization_details types are printable ASCII without spaces'))
  .max(50).refine((t) => new Set(t).size === t.length, 'each type once');

const defaultsWithinScopes = (r: { scopes?: string[] | undefined; default_scopes?: string[] | undefined }) =>
  (r.default_scopes ?? []).every((s) => (r.scopes ?? []).includes(s));
const DEFAULTS_WITHIN = { message: 'default_scopes must be a subset of scopes', path: ['default_scopes'] };

/**
 * A rule's time bounds, in the document as ISO 8601 date-times with a zone (`2025-07-01T00:00:00Z`), stored as
 * epoch seconds (a fraction of a second is dropped). `not_before` is inclusive, `expires_at` exclusive.
 */
const Instant = z.iso.datetime({ offset: true, message: 'an ISO 8601 date-time with a zone, such as 2025-07-01T00:00:00Z' });
export const secondsOf = (iso: string): number => Math.floor(Date.parse(iso) / 1000);
const windowOpen = (r: { not_before?: string | undefined; expires_at?: string | undefined }) =>
  r.not_before === undefined || r.expires_at === undefined || secondsOf(r.expires_at) > secondsOf(r.not_before);
const WINDOW_OPEN = { message: 'expires_at must be later than not_before', path: ['expires_at'] };

export const RuleDoc = z.strictObject({
  /** omitted: derived from client, target and subjects, so the same rule applied twice is found again */
  id: RuleId.optional(),
  description: Description.optional(),
  client_id: z.string().min(1).max(200),
  /** the Resource AS by issuer (or one of its aliases) */
  audience: Uri,
  /** omitted: the rule covers the whole Resource AS */
  resource: Uri.optional(),
  who: Who,
  scopes: Scopes,
  default_scopes: DefaultScopes.default([]),
  /** the client's id at the Resource AS (the ID-JAG client_id); omitted: the same as here */
  rs_client_id: RsClientId.optional(),
  lifetime: Lifetime.default(300),
  max_auth_age: MaxAuthAge.optional(),
  /** the RFC 9396 authorization_details types its client may be granted for this target; omitted: none */
  authorization_details_types: DetailsTypes.optional(),
  enabled: z.boolean().optional(),
  /** the rule is in force from this instant on; omitted: since it was made */
  not_before: Instant.optional(),
  /** the rule is in force until this instant (exclusive); omitted: until changed */
  expires_at: Instant.optional(),
}).refine(defaultsWithinScopes, DEFAULTS_WITHIN).refine(windowOpen, WINDOW_OPEN);
export type RuleDoc = z.infer<typeof RuleDoc>;

/** PATCH: absent keys keep their value, null clears an optional one; the merged rule is validated whole. */
export const RulePatch = z.strictObject({
  description: Description.nullable().optional(),
  client_id: z.string().min(1).max(200).optional(),
  audience: Uri.optional(),
  resource: Uri.nullable().optional(),
  who: Who.optional(),
  scopes: Scopes.optional(),
  default_scopes: DefaultScopes.optional(),
  rs_client_id: RsClientId.nullable().optional(),
  lifetime: Lifetime.optional(),
  max_auth_age: MaxAuthAge.nullable().optional(),
  authorization_details_types: DetailsTypes.nullable().optional(),
  enabled: z.boolean().optional(),
  not_before: Instant.nullable().optional(),
  expires_at: Instant.nullable().optional(),
});
export type RulePatch = z.infer<typeof RulePatch>;

export const RuleFilter = z.strictObject({
  client_id: z.string().max(200).optional(),
  /** a Resource AS, by issuer or alias */
  audience: z.string().max(2048).optional(),
  /** an MCP server: the rules naming it and the rules covering its whole Resource AS */
  resource: z.string().max(2048).optional(),
  /** rules naming this group */
  group: z.string().max(100).optional(),
  enabled: QueryBoolean.optional(),
  /** time-bound rules by where now falls in their window: in_force (no window counts), expired, not_yet_valid */
  validity: z.enum(['in_force', 'expired', 'not_yet_valid']).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  /** the last id of the previous page */
  after: RuleId.optional(),
});
export type RuleFilter = z.infer<typeof RuleFilter>;

/** A rule as the document states it, with its id always present. */
export type RuleState = Omit<RuleDoc, 'id'> & { id: string };

/** Where now falls in a rule's window (whether it is enabled is another matter). */
export type Validity = 'in_force' | 'expired' | 'not_yet_valid';

export function validityAt(bounds: { not_before: number | null; expires_at: number | null }, at: number): Validity {
  if (bounds.expires_at !== null && at >= bounds.expires_at) return 'expired';
  if (bounds.not_before !== null && at < bounds.not_before) return 'not_yet_valid';
  return 'in_force';
}

export interface RuleView extends RuleState {
  /** now, against not_before and expires_at */
  validity: Validity;
  resource_server_id: string;
  mcp_server_id: string | null;
  created_at: string;
  created_by: string;
  updated_at: string;
  updated_by: string;
}

/** Rules without an id get one derived from what they say, so applying a seed twice finds the same rule. */
export function ruleId(r: Pick<RuleDoc, 'id' | 'client_id' | 'audience' | 'resource' | 'who'>): string {
  if (r.id) return r.id;
  const who = r.who === 'everyone' ? 'everyone' : JSON.stringify(r.who);
  return `rule-${createHash('sha256').update([r.client_id, r.audience, r.resource ?? '*', who].join('\n')).digest('base64url').slice(0, 16)}`;
}

const sameSet = (a: string[], b: string[]) => a.length === b.length && a.every((x) => b.includes(x));

type RuleFields = Omit<PolicyRulesTable, 'id' | 'created_at' | 'updated_at' | 'created_by' | 'updated_by'>;

/**
 * Checks a rule against what is stored and translates it to a row: the client exists, the audience is a known
 * Resource AS, the resource one of its MCP servers, every scope defined by that MCP server, the users and
 * groups exist, and no other rule says the same thing. Every problem is reported, each at its field.
 */
export async function resolveRule(db: DB, r: RuleDoc, path: (string | number)[] = [], selfId?: string): Promise<RuleFields> {
  const issues: Issue[] = [];
  const at = (...p: (string | number)[]) => [...path, ...p];
  const client = await findClientRow(db, r.client_id);
  if (!client) issues.push({ path: at('client_id'), message: `unknown client ${r.client_id}` });

  const rs = await findResourceServer(db, r.audience);
  if (!rs) issues.push({ path: at('audience'), message: `unknown Resource AS ${r.audience}` });

  let mcpServerId: string | null = null;
  if (r.resource && rs) {
    const mcp = await db.selectFrom('mcp_servers').select(['id', 'resource_server_id', 'scopes']).where('resource', '=', r.resource).executeTakeFirst();
    if (!mcp || mcp.resource_server_id !== rs.id) {
      issues.push({ path: at('resource'), message: `${r.resource} is not an MCP server of ${rs.issuer}` });
    } else {
      mcpServerId = mcp.id;
      const defined = JSON.parse(mcp.scopes) as string[];
      r.scopes.forEach((s, i) => {
        if (!defined.includes(s)) issues.push({ path: at('scopes', i), message: `${s} is not defined by ${r.resource} (it defines ${defined.join(' ') || 'none'})` });
      });
    }
  }

  let subjectKind: SubjectKind = 'everyone';
  let subjects: string[] = [];
  if (r.who !== 'everyone' && 'users' in r.who) {
    subjectKind = 'users';
    const users = await subsOf(db, r.who.users);
    r.who.users.forEach((u, i) => {
      if (!users.some((x) => x.username === u)) issues.push({ path: at('who', 'users', i), message: `unknown user ${u}` });
    });
    subjects = r.who.users.map((u) => users.find((x) => x.username === u)?.sub ?? u);
  } else if (r.who !== 'everyone') {
    subjectKind = 'groups';
    const groups = await db.selectFrom('groups').select('name').where('name', 'in', r.who.groups).execute();
    r.who.groups.forEach((g, i) => {
      if (!groups.some((x) => x.name === g)) issues.push({ path: at('who', 'groups', i), message: `unknown group ${g}` });
    });
    subjects = r.who.groups;
  }
  subjects = [...new Set(subjects)];

  if (client && rs) {
    const siblings = await db.selectFrom('policy_rules').select(['id', 'mcp_server_id', 'subject_kind', 'subjects'])
      .where('client_id', '=', r.client_id).where('resource_server_id', '=', rs.id).execute();
    const twin = siblings.find((s) => s.id !== selfId && s.mcp_server_id === mcpServerId && s.subject_kind === subjectKind
      && sameSet(JSON.parse(s.subjects) as string[], subjects));
    if (twin) issues.push({ path: at('who'), message: `duplicate of rule ${twin.id}: same client, target and subjects; edit that rule instead` });
  }

  if (issues.length || !rs) throw new InvalidInput(issues);
  return {
    client_id: r.client_id,
    resource_server_id: rs.id,
    mcp_server_id: mcpServerId,
    subject_kind: subjectKind,
    subjects: JSON.stringify(subjects),
    scopes: JSON.stringify(r.scopes),
    default_scopes: JSON.stringify(r.default_scopes),
    rs_client_id: r.rs_client_id ?? null,
    lifetime: r.lifetime,
    max_auth_age: r.max_auth_age ?? null,
    authorization_details_types: JSON.stringify(r.authorization_details_types ?? []),
    enabled: r.enabled === false ? 0 : 1,
    description: r.description ?? null,
    not_before: r.not_before === undefined ? null : secondsOf(r.not_before),
    expires_at: r.expires_at === undefined ? null : secondsOf(r.expires_at),
  };
}

/** Creates or replaces the rule the document describes; returns its id. Runs inside the caller's transaction. */
export async function writeRule(db: DB, r: RuleDoc, actor: string, at = now(), path: (string | number)[] = []): Promise<string> {
  const id = ruleId(r);
  const fields = { ...(await resolveRule(db, r, path, id)), updated_at: at, updated_by: actor };
  await db.insertInto('policy_rules').values({ id, created_at: at, created_by: actor, ...fields })
    .onConflict((oc) => oc.column('id').doUpdateSet(fields)).execute();
  return id;
}

/** Rows to views: audience and resource by URI, user subjects by username, in three lookups for a whole page. */
async function toViews(db: DB, rows: PolicyRulesTable[], at = now()): Promise<RuleView[]> {
  if (rows.length === 0) return [];
  const rsIds = [...new Set(rows.map((r) => r.resource_server_id))];
  const mcpIds = [...new Set(rows.map((r) => r.mcp_server_id).filter((x): x is string => x !== null))];
  const subs = [...new Set(rows.filter((r) => r.subject_kind === 'users').flatMap((r) => JSON.parse(r.subjects) as string[]))];
  const issuers = new Map((await db.selectFrom('resource_servers').select(['id', 'issuer']).where('id', 'in', rsIds).execute()).map((x) => [x.id, x.issuer]));
  const resources = new Map(mcpIds.length ? (await db.selectFrom('mcp_servers').select(['id', 'resource']).where('id', 'in', mcpIds).execute()).map((x) => [x.id, x.resource]) : []);
  const usernames = await usernamesOf(db, subs);
  return rows.map((row) => {
    const list = JSON.parse(row.subjects) as string[];
    // A subject whose user is gone stays visible by sub: an import of it then fails loudly instead of
    // silently widening or narrowing the rule.
    const who: Who = row.subject_kind === 'groups' ? { groups: list }
      : row.subject_kind === 'users' ? { users: list.map((s) => usernames.get(s) ?? s) } : 'everyone';
    const mcp = row.mcp_server_id === null ? undefined : resources.get(row.mcp_server_id);
    const detailTypes = JSON.parse(row.authorization_details_types) as string[];
    return {
      id: row.id,
      ...present({ description: row.description }),
      client_id: row.client_id,
      audience: issuers.get(row.resource_server_id) ?? row.resource_server_id,
      ...(mcp === undefined ? {} : { resource: mcp }),
      who,
      scopes: JSON.parse(row.scopes) as string[],
      default_scopes: JSON.parse(row.default_scopes) as string[],
      ...present({ rs_client_id: row.rs_client_id }),
      lifetime: row.lifetime,
      ...present({ max_auth_age: row.max_auth_age }),
      ...(detailTypes.length ? { authorization_details_types: detailTypes } : {}),
      enabled: Boolean(row.enabled),
      ...(row.not_before === null ? {} : { not_before: isoFromSeconds(row.not_before) }),
      ...(row.expires_at === null ? {} : { expires_at: isoFromSeconds(row.expires_at) }),
      validity: validityAt(row, at),
      resource_server_id: row.resource_server_id,
      mcp_server_id: row.mcp_server_id,
      created_at: isoFromSeconds(row.created_at),
      created_by: row.created_by,
      updated_at: isoFromSeconds(row.updated_at),
      updated_by: row.updated_by,
    };
  });
}

/** The document form of a view: what export writes and what the change log compares. */
export function ruleState(v: RuleView): RuleState {
  const { validity: _v, resource_server_id: _rs, mcp_server_id: _mcp, created_at: _ca, created_by: _cb, updated_at: _ua, updated_by: _ub, ...state } = v;
  return state;
}

export async function findRule(db: DB, id: string): Promise<RuleView | undefined> {
  const row = await db.selectFrom('policy_rules').selectAll().where('id', '=', id).executeTakeFirst();
  return row ? (await toViews(db, [row]))[0] : undefined;
}

export async function readRuleState(db: DB, id: string): Promise<RuleState | undefined> {
  const view = await findRule(db, id);
  return view && ruleState(view);
}

export async function getRule(db: DB, id: string): Promise<RuleView> {
  const view = await findRule(db, id);
  if (!view) throw new NotFound('rule', id);
  return view;
}

/** Every rule, in id order (the export). */
export async function allRules(db: DB): Promise<RuleView[]> {
  return toViews(db, await db.selectFrom('policy_rules').selectAll().orderBy('id').execute());
}

/** One page of rules in id order, filtered; `next` is the `after` of the following page. */
export async function listRules(db: DB, f: RuleFilter): Promise<{ items: RuleView[]; next: string | null }> {
  let q = db.selectFrom('policy_rules').selectAll();
  if (f.client_id !== undefined) q = q.where('client_id', '=', f.client_id);
  const none = { items: [], next: null };
  if (f.audience !== undefined) {
    const rs = await findResourceServer(db, f.audience);
    if (!rs) return none;
    q = q.where('resource_server_id', '=', rs.id);
  }
  if (f.resource !== undefined) {
    const mcp = await db.selectFrom('mcp_servers').select(['id', 'resource_server_id']).where('resource', '=', f.resource).executeTakeFirst();
    if (!mcp) return none;
    q = q.where('resource_server_id', '=', mcp.resource_server_id).where((eb) => eb.or([eb('mcp_server_id', '=', mcp.id), eb('mcp_server_id', 'is', null)]));
  }
  if (f.group !== undefined) {
    q = q.where('subject_kind', '=', 'groups').where(namesSubject(f.group));
  }
  if (f.enabled !== undefined) q = q.where('enabled', '=', f.enabled ? 1 : 0);
  if (f.validity !== undefined) {
    const t = now();
    q = f.validity === 'expired' ? q.where('expires_at', '<=', t)
      : f.validity === 'not_yet_valid' ? q.where('not_before', '>', t).where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', t)]))
        : q.where((eb) => eb.and([
          eb.or([eb('not_before', 'is', null), eb('not_before', '<=', t)]),
          eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', t)]),
        ]));
  }
  if (f.after !== undefined) q = q.where('id', '>', f.after);
  const rows = await q.orderBy('id').limit(f.limit + 1).execute();
  const page = rows.slice(0, f.limit);
  return { items: await toViews(db, page), next: rows.length > f.limit ? page.at(-1)!.id : null };
}

/**
 * `subjects` (a JSON array of group names or subs) holds this one as an element: its quoted JSON form occurs
 * in the text. Case-sensitive on both dialects, as names are (LIKE folds case on SQLite and not on PostgreSQL;
 * replace() compares exactly on both).
 */
const namesSubject = (name: string) => {
  const quoted = JSON.stringify(name);
  return sql<boolean>`replace(${sql.ref('subjects')}, ${quoted}, '') <> ${sql.ref('subjects')}`;
};

/** Ids of the rules that name an entity, so deleting it can be refused instead of silently cascading. */
export async function rulesReferencing(db: DB, ref: { clientId?: string; resourceServerId?: string; mcpServerId?: string; group?: string; sub?: string }): Promise<string[]> {
  let q = db.selectFrom('policy_rules').select('id');
  if (ref.clientId !== undefined) q = q.where('client_id', '=', ref.clientId);
  if (ref.resourceServerId !== undefined) q = q.where('resource_server_id', '=', ref.resourceServerId);
  if (ref.mcpServerId !== undefined) q = q.where('mcp_server_id', '=', ref.mcpServerId);
  if (ref.group !== undefined) q = q.where('subject_kind', '=', 'groups').where(namesSubject(ref.group));
  if (ref.sub !== undefined) q = q.where('subject_kind', '=', 'users').where(namesSubject(ref.sub));
  return (await q.orderBy('id').limit(100).execute()).map((r) => r.id);
}

export async function createRule(db: DB, input: RuleDoc, by: Actor, opts: ChangeOptions = {}): Promise<RuleView> {
  const id = ruleId(input);
  return changeTransaction(db, opts, async (trx) => {
    if (await findRule(trx, id)) {
      throw input.id ? invalid(['id'], `rule ${id} already exists`)
        : invalid(['who'], `duplicate of rule ${id}: same client, target and subjects; edit that rule instead`);
    }
    await writeRule(trx, { ...input, id }, by.actor);
    const view = await getRule(trx, id);
    await recordChanges(trx, by, [{ action: 'create', entity: 'rule', entity_id: id, before: null, after: ruleState(view) }], { impact: opts.impact });
    return view;
  });
}

async function changeRule(db: DB, id: string, patch: RulePatch, by: Actor, opts: ChangeOptions): Promise<RuleView> {
  return changeTransaction(db, opts, async (trx) => {
    const before = await readRuleState(trx, id);
    if (!before) throw new NotFound('rule', id);
    const next = parseInput(RuleDoc, merge(before, patch));
    await writeRule(trx, next, by.actor);
    const view = await getRule(trx, id);
    const change = diff('rule', id, before, ruleState(view));
    if (change) await recordChanges(trx, by, [change], { impact: opts.impact });
    return view;
  });
}

export const updateRule = (db: DB, id: string, patch: RulePatch, by: Actor, opts: ChangeOptions = {}) => changeRule(db, id, patch, by, opts);

export const setRuleEnabled = (db: DB, id: string, enabled: boolean, by: Actor, opts: ChangeOptions = {}) => changeRule(db, id, { enabled }, by, opts);

export async function deleteRule(db: DB, id: string, by: Actor, opts: ChangeOptions = {}): Promise<void> {
  await changeTransaction(db, opts, async (trx) => {
    const before = await readRuleState(trx, id);
    if (!before) throw new NotFound('rule', id);
    await trx.deleteFrom('policy_rules').where('id', '=', id).execute();
    const change: Change = { action: 'delete', entity: 'rule', entity_id: id, before, after: null };
    await recordChanges(trx, by, [change], { impact: opts.impact });
  });
}
