import { decodeResources } from '../audit/codec.ts';
import { findMcpServers, findResourceServer, rulesFor, type McpServerRecord, type ResourceServerFacts } from '../db/catalog.ts';
import { type ClientRow } from '../db/clients.ts';
import type { DB } from '../db/index.ts';
import type { User } from '../db/users.ts';
import { previewMinter } from '../exchange/mint.ts';
import { runExchange, type Directory, type RuleSource } from '../exchange/pipeline.ts';
import type { RequestingClient } from '../exchange/request.ts';
import { assumedSubject } from '../exchange/subject.ts';
import type { Catalog } from '../exchange/target.ts';
import { DENY_REASONS, type Rule } from '../policy/index.ts';
import type { ChangeOptions } from './changes.ts';
import { assumedClient, assumedRequest } from './simulate.ts';

/**
 * What a policy change would have done to recorded traffic, before it is made. The decisions of the last N days
 * are replayed twice through the token endpoint's own pipeline (src/exchange/pipeline.ts, the simulator's
 * assumed subject and previewing minter) with the inputs the audit log recorded: once over the configuration as
 * it is, once over the configuration as the change would leave it. The change is rehearsed in a transaction that
 * is rolled back (a dry run of the very write a save makes), and the state it would leave is read there, so the
 * "after" side includes everything the change does: a rule edited, moved, disabled or deleted, an import's
 * groups, clients and MCP servers.
 *
 * Comparing two replays, rather than a replay with the record, keeps what a replay cannot know out of the
 * comparison: both sides see the users' groups as they are now and a login as fresh as the decision, so only
 * the change can make them differ. How far the current replay has drifted from what was recorded is reported.
 */

export interface ImpactSettings {
  /** how many days of recorded decisions to replay */
  days: number;
  /** the most decisions replayed (the newest); beyond, the summary says the cap was hit */
  maxRows: number;
}

export const DEFAULT_IMPACT: ImpactSettings = { days: 7, maxRows: 10_000 };

export const IMPACT_KINDS = ['now_denied', 'now_issued', 'narrowed', 'widened', 'reshaped'] as const;
/**
 * now_denied: issued, would be denied; now_issued: denied, would be issued; narrowed: issued either way, with
 * fewer scopes; widened: with more; reshaped: some scopes lost and others gained.
 */
export type ImpactKind = (typeof IMPACT_KINDS)[number];

/** What one side of the replay decided. */
export interface Replayed {
  decision: 'issued' | 'denied';
  /** `issued`, or the refusal's reason */
  reason: string;
  scopes: string[];
  rule_ids: string[];
}

export interface ImpactExample {
  kind: ImpactKind;
  /** the audit entry (GET /admin/api/audit/{id}, /admin/audit/{id}) */
  id: string;
  at: string;
  username: string | null;
  client_id: string;
  audience: string;
  resources: string[];
  scopes_requested: string | null;
  before: Replayed;
  after: Replayed;
}

export interface ImpactByTarget extends Record<ImpactKind, number> {
  client_id: string;
  /** the Resource AS's issuer (what the client sent, when it is no longer known) */
  audience: string;
  /** the requested MCP servers; empty for an audience-only request */
  resources: string[];
}

export interface ImpactSummary {
  window: { from: string; to: string; days: number };
  /** clients whose decisions were replayed; null: every client (an import) */
  clients: string[] | null;
  /** decisions replayed */
  replayed: number;
  max_rows: number;
  /** the window held more replayable decisions than max_rows: only the newest were replayed */
  capped: boolean;
  counts: Record<ImpactKind | 'unchanged', number>;
  /** replayed decisions that the configuration as it is no longer decides as recorded (groups, users or rules changed since) */
  drifted: number;
  /** per client and target, the ones with changes, most changes first (at most 50) */
  by_target: ImpactByTarget[];
  /** up to five audit entries of each kind */
  examples: ImpactExample[];
  /** what a replay cannot know, said plainly */
  limits: string[];
}

const EXAMPLES_PER_KIND = 5;
const TARGETS_KEPT = 50;
const IN_LIST = 500;
const DAY_MS = 86_400_000;

/** The decisions a replay can stand behind: issued, or refused by the policy (what came before it was passed). */
const REPLAYABLE_REASONS = ['issued', ...DENY_REASONS];

export const REPLAY_LIMITS = [
  'Both sides use each user\'s groups, enabled state and clients as they are now, not as they were when the decision was made.',
  'The audit log does not keep the login time: every decision is replayed as if the user had just signed in, so step-up rules (max_auth_age) never refuse in a replay.',
  'Rule time bounds are read at the time of each recorded decision.',
  'Only decisions that reached the policy are replayed: requests refused before it (an invalid subject token, an unknown audience or resource, client authentication, a rate limit) and failed exchanges are not, since a replay cannot re-check a token.',
];

interface RecordedDecision {
  id: string;
  at: number;
  decision: 'issued' | 'denied';
  client_id: string;
  sub: string;
  username: string | null;
  audience: string;
  resources: string[];
  scopes: string[];
  scopes_requested: string | null;
  scopes_granted: string | null;
}

/** The newest replayable decisions of the window, at most `cap` + 1 (one more says the cap was hit). */
async function recordedDecisions(db: DB, clients: string[] | null, from: number, to: number, cap: number): Promise<RecordedDecision[]> {
  if (clients && !clients.length) return [];
  let q = db.selectFrom('audit_log')
    .select(['id', 'at', 'decision', 'client_id', 'sub', 'username', 'audience', 'resources', 'scopes_requested', 'scopes_granted'])
    .where('at', '>=', from).where('at', '<', to)
    .where('decision', 'in', ['issued', 'denied']).where('reason', 'in', REPLAYABLE_REASONS)
    .where('client_id', 'is not', null).where('sub', 'is not', null).where('audience', 'is not', null);
  if (clients) q = q.where('client_id', 'in', clients);
  const rows = await q.orderBy('at', 'desc').orderBy('id', 'desc').limit(cap + 1).execute();
  return rows.map((r) => ({
    id: r.id, at: r.at, decision: r.decision as 'issued' | 'denied', client_id: r.client_id!, sub: r.sub!, username: r.username, audience: r.audience!,
    resources: decodeResources(r.resources), scopes: r.scopes_requested ? r.scopes_requested.split(' ').filter(Boolean) : [], scopes_requested: r.scopes_requested,
    scopes_granted: r.scopes_granted,
  }));
}

/**
 * The configuration as the pipeline's ports read it, loaded once for the decisions being replayed: their
 * clients, users, groups, audiences, MCP servers and the candidate rules of each client and Resource AS.
 */
interface World {
  clients: Map<string, RequestingClient>;
  users: Map<string, User>;
  groups: Map<string, string[]>;
  audiences: Map<string, ResourceServerFacts | undefined>;
  mcpServers: Map<string, McpServerRecord>;
  rules: Map<string, Rule[]>;
}

const pairKey = (clientId: string, rsId: string) => `${clientId}\n${rsId}`;

function chunks<T>(list: T[], size = IN_LIST): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

async function loadWorld(db: DB, rows: RecordedDecision[]): Promise<World> {
  const distinct = <T>(f: (r: RecordedDecision) => T[]) => [...new Set(rows.flatMap(f))];
  const clientIds = distinct((r) => [r.client_id]);
  const subs = distinct((r) => [r.sub]);
  const world: World = { clients: new Map(), users: new Map(), groups: new Map(), audiences: new Map(), mcpServers: new Map(), rules: new Map() };
  for (const part of chunks(clientIds)) {
    const found: ClientRow[] = await db.selectFrom('clients').select(['client_id', 'metadata', 'secret_hash', 'first_party', 'disabled']).where('client_id', 'in', part).execute();
    for (const c of found) world.clients.set(c.client_id, assumedClient(c));
  }
  for (const part of chunks(subs)) {
    const users = await db.selectFrom('users').select(['sub', 'username', 'email', 'email_verified', 'name', 'disabled']).where('sub', 'in', part).execute();
    for (const u of users) world.users.set(u.sub, u);
    const members = await db.selectFrom('group_members').select(['user_sub', 'group_name']).where('user_sub', 'in', part).orderBy('group_name').execute();
    for (const m of members) world.groups.set(m.user_sub, [...(world.groups.get(m.user_sub) ?? []), m.group_name]);
  }
  for (const audience of distinct((r) => [r.audience])) world.audiences.set(audience, await findResourceServer(db, audience));
  for (const part of chunks(distinct((r) => r.resources))) {
    for (const m of await findMcpServers(db, part)) world.mcpServers.set(m.resource, m);
  }
  const pairs = new Map(rows.flatMap((r) => {
    const rs = world.audiences.get(r.audience);
    return rs ? [[pairKey(r.client_id, rs.id), { clientId: r.client_id, rsId: rs.id }] as const] : [];
  }));
  for (const [key, p] of pairs) world.rules.set(key, await rulesFor(db, p.clientId, p.rsId));
  return world;
}

function worldPorts(w: World): { directory: Directory; catalog: Catalog; rules: RuleSource } {
  return {
    directory: {
      member: async (sub) => {
        const user = w.users.get(sub);
        return user && { user, groups: w.groups.get(sub) ?? [] };
      },
    },
    catalog: {
      resourceServer: async (audience) => w.audiences.get(audience),
      mcpServers: async (resources) => resources.flatMap((r) => { const m = w.mcpServers.get(r); return m ? [m] : []; }),
      // the claims an ID-JAG would carry decide nothing
      audienceSubject: async () => undefined,
    },
    rules: { rulesFor: async (clientId, rsId) => w.rules.get(pairKey(clientId, rsId)) ?? [] },
  };
}

/** One recorded decision, decided again by the pipeline over `world`, at the time it was made. */
async function replay(row: RecordedDecision, world: World): Promise<Replayed> {
  const client = world.clients.get(row.client_id);
  if (!client) return { decision: 'denied', reason: 'client_unknown', scopes: [], rule_ids: [] };
  const at = Math.floor(row.at / 1000);
  const result = await runExchange(assumedRequest(client, row.audience, row.resources, row.scopes), {
    ...worldPorts(world), subjects: assumedSubject(row.sub, at), minter: previewMinter, issuer: '', clock: () => at,
  });
  const { outcome } = result;
  if (outcome.kind === 'failed') throw outcome.error;
  if (outcome.kind === 'denied') return { decision: 'denied', reason: outcome.rejection.reason, scopes: [], rule_ids: outcome.rejection.ruleIds };
  return { decision: 'issued', reason: 'issued', scopes: outcome.decision.scopes, rule_ids: outcome.decision.ruleIds };
}

/** Which kind of change one decision sees, or undefined when the change does not touch it. */
export function impactKind(before: Replayed, after: Replayed): ImpactKind | undefined {
  if (before.decision !== after.decision) return before.decision === 'issued' ? 'now_denied' : 'now_issued';
  if (before.decision === 'denied') return undefined;
  const lost = before.scopes.some((s) => !after.scopes.includes(s));
  const gained = after.scopes.some((s) => !before.scopes.includes(s));
  return lost && gained ? 'reshaped' : lost ? 'narrowed' : gained ? 'widened' : undefined;
}

/** Whether the replay over the configuration as it is decides what the audit log recorded. */
function asRecorded(row: RecordedDecision, replayed: Replayed): boolean {
  return replayed.decision === row.decision && (row.decision === 'denied' || replayed.scopes.join(' ') === (row.scopes_granted ?? ''));
}

const zero = (): Record<ImpactKind, number> => ({ now_denied: 0, now_issued: 0, narrowed: 0, widened: 0, reshaped: 0 });

/**
 * The impact of a change on the decisions of the last `settings.days` days: `rehearse` runs the change as a dry
 * run (it must pass the options on to the write, which calls `inspect` inside its transaction before rolling
 * back); `clients`: the clients whose decisions it can touch (a rule's, before and after), or null for all.
 * Returns what the rehearsal returned, and the impact.
 */
export async function previewImpact<T>(db: DB, settings: ImpactSettings, clients: string[] | null,
  rehearse: (opts: ChangeOptions) => Promise<T>, now = Date.now()): Promise<{ result: T; impact: ImpactSummary }> {
  const from = now - settings.days * DAY_MS;
  const recorded = await recordedDecisions(db, clients, from, now, settings.maxRows);
  const rows = recorded.slice(0, settings.maxRows);
  const before = await loadWorld(db, rows);
  let after: World | undefined;
  const result = await rehearse({ dryRun: true, inspect: async (trx) => { after = await loadWorld(trx, rows); } });
  if (!after) throw new Error('the rehearsal did not reach its transaction');

  const counts = { ...zero(), unchanged: 0 };
  const targets = new Map<string, ImpactByTarget>();
  const examples: ImpactExample[] = [];
  let drifted = 0;
  for (const row of rows) {
    const [b, a] = [await replay(row, before), await replay(row, after)];
    if (!asRecorded(row, b)) drifted++;
    const kind = impactKind(b, a);
    if (!kind) {
      counts.unchanged++;
      continue;
    }
    counts[kind]++;
    const audience = before.audiences.get(row.audience)?.issuer ?? row.audience;
    const key = JSON.stringify([row.client_id, audience, row.resources]);
    const t = targets.get(key) ?? { client_id: row.client_id, audience, resources: row.resources, ...zero() };
    t[kind]++;
    targets.set(key, t);
    if (examples.filter((e) => e.kind === kind).length < EXAMPLES_PER_KIND) {
      examples.push({
        kind, id: row.id, at: new Date(row.at).toISOString(), username: row.username, client_id: row.client_id, audience: row.audience,
        resources: row.resources, scopes_requested: row.scopes_requested, before: b, after: a,
      });
    }
  }
  const total = (t: ImpactByTarget) => IMPACT_KINDS.reduce((n, k) => n + t[k], 0);
  return {
    result,
    impact: {
      window: { from: new Date(from).toISOString(), to: new Date(now).toISOString(), days: settings.days },
      clients: clients ? [...new Set(clients)].sort() : null,
      replayed: rows.length,
      max_rows: settings.maxRows,
      capped: recorded.length > settings.maxRows,
      counts,
      drifted,
      by_target: [...targets.values()].sort((x, y) => total(y) - total(x) || x.client_id.localeCompare(y.client_id)).slice(0, TARGETS_KEPT),
      examples,
      limits: REPLAY_LIMITS,
    },
  };
}

/** Whether any decision changes: for a one-line summary. */
export const changedCount = (impact: ImpactSummary): number => IMPACT_KINDS.reduce((n, k) => n + impact.counts[k], 0);
