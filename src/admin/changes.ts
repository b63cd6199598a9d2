import { z } from 'zod';
import { uuidv7 } from '../audit/index.ts';
import type { DB } from '../db/index.ts';
import type { AdminChangesTable } from '../db/schema.ts';
import { invalid } from './errors.ts';
import type { ImpactSummary } from './impact.ts';

/**
 * The admin change log: every change an admin makes, with the entity before and after, in the shape of the
 * configuration document (so a change reads like a diff of an export). Written in the same transaction as
 * the change itself: a change is never stored without its record, nor recorded without being stored.
 */

export const ENTITIES = ['group', 'user', 'client', 'resource_server', 'mcp_server', 'rule', 'signing_keys'] as const;
export type Entity = (typeof ENTITIES)[number];

export const ACTIONS = ['create', 'update', 'delete', 'enable', 'disable', 'rotate_secret', 'reset_password', 'rotate_keys'] as const;
export type Action = (typeof ACTIONS)[number];

export interface Change {
  action: Action;
  entity: Entity;
  /** the entity's natural key: client_id, username, group name, issuer, resource, rule id */
  entity_id: string;
  before: unknown;
  after: unknown;
}

/** Who is changing things, and through which request. */
export interface Actor {
  /** 'client:<client_id>' through the JSON API; 'user:<username>' through the web UI; 'seed' */
  actor: string;
  requestId?: string | undefined;
}

// A second line of defence: snapshots are built from views that hold no secret, and this drops any field
// that could hold one anyway, so a later view that forgets cannot leak a secret into the log.
const SECRET_FIELDS = new Set(['client_secret', 'secret_hash', 'password', 'password_hash', 'private_jwk', 'd', 'p', 'q', 'dp', 'dq', 'qi', 'k']);

export function scrub(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(scrub);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).filter(([k]) => !SECRET_FIELDS.has(k)).map(([k, v]) => [k, scrub(v)]));
  }
  return value;
}

/** JSON with object keys sorted: two snapshots are the same entity state exactly when these strings are equal. */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (v && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : v));
}

/**
 * What happened between two snapshots: nothing, a create, an enable or disable (when that flag is all that
 * changed, however the change was made: a button, a PATCH or an import), or an update.
 */
export function diff(entity: Entity, entityId: string, before: unknown, after: unknown): Change | undefined {
  if (before === undefined || before === null) return { action: 'create', entity, entity_id: entityId, before: null, after };
  if (canonical(before) === canonical(after)) return undefined;
  const b = before as Record<string, unknown>;
  const a = after as Record<string, unknown>;
  const changed = [...new Set([...Object.keys(b), ...Object.keys(a)])].filter((k) => canonical(b[k]) !== canonical(a[k]));
  const flag = changed.length === 1 ? changed[0] : undefined;
  const action: Action = flag === 'enabled' ? (a.enabled === false ? 'disable' : 'enable')
    : flag === 'disabled' ? (a.disabled === true ? 'disable' : 'enable') : 'update';
  return { action, entity, entity_id: entityId, before, after };
}

export interface RecordOptions {
  /** epoch milliseconds; default now */
  at?: number;
  /**
   * What the change would have done to recorded decisions (src/admin/impact.ts), kept with the first change of
   * the batch: a rule change has one, an import's many changes share one impact.
   */
  impact?: ImpactSummary | undefined;
}

export async function recordChanges(db: DB, by: Actor, changes: Change[], { at = Date.now(), impact }: RecordOptions = {}): Promise<void> {
  if (changes.length === 0) return;
  const rows: AdminChangesTable[] = changes.map((c, i) => ({
    id: uuidv7(at),
    at,
    actor: by.actor,
    action: c.action,
    entity: c.entity,
    entity_id: c.entity_id,
    before: c.before === null || c.before === undefined ? null : JSON.stringify(scrub(c.before)),
    after: c.after === null || c.after === undefined ? null : JSON.stringify(scrub(c.after)),
    request_id: by.requestId ?? null,
    impact: i === 0 && impact ? JSON.stringify(impact) : null,
  }));
  // UUIDv7 randomness does not order rows within one millisecond: sort so one batch reads in write order
  // when paged newest-first, whatever ids it drew.
  const ids = rows.map((r) => r.id).sort();
  rows.forEach((r, i) => { r.id = ids[i]!; });
  await db.insertInto('admin_changes').values(rows).execute();
}

/** How a change is made: for real, or rehearsed and rolled back (a preview). */
export interface ChangeOptions {
  /** run every check and every write, then roll back: nothing is stored, not even the change log */
  dryRun?: boolean | undefined;
  /** called in the transaction once the change is written, before it commits or rolls back: a preview reads there the state the change would leave */
  inspect?: ((trx: DB) => Promise<void>) | undefined;
  /** the change's impact on recorded decisions, recorded with it */
  impact?: ImpactSummary | undefined;
}

const DRY_RUN = Symbol('dry run');

/**
 * One change, in one transaction, with its change-log record: `work` writes and records; a dry run then rolls
 * all of it back and returns what `work` returned, so a preview runs exactly the checks and writes a save does.
 */
export async function changeTransaction<T>(db: DB, opts: ChangeOptions, work: (trx: DB) => Promise<T>): Promise<T> {
  let result: T | undefined;
  try {
    return await db.transaction().execute(async (trx) => {
      result = await work(trx);
      await opts.inspect?.(trx);
      if (opts.dryRun) throw DRY_RUN;
      return result;
    });
  } catch (err) {
    if (err !== DRY_RUN) throw err;
    return result as T;
  }
}

export interface ChangeView extends Change {
  id: string;
  at: string;
  actor: string;
  request_id: string | null;
  /** the impact summary computed before the change was saved, when one was */
  impact: ImpactSummary | null;
}

export const ChangeQuery = z.strictObject({
  entity: z.enum(ENTITIES).optional(),
  entity_id: z.string().min(1).max(2048).optional(),
  actor: z.string().min(1).max(300).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().max(200).optional(),
});
export type ChangeQuery = z.infer<typeof ChangeQuery>;

/** Opaque page cursors over (at, id), newest first; shared with the audit log. */
export function encodeCursor(at: number, id: string): string {
  return Buffer.from(`${at}.${id}`).toString('base64url');
}

export function decodeCursor(cursor: string): { at: number; id: string } {
  const m = /^(\d{1,16})\.([0-9a-f-]{36})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!m) throw invalid(['cursor'], 'not a cursor this API returned');
  return { at: Number(m[1]), id: m[2]! };
}

export async function listChanges(db: DB, q: ChangeQuery): Promise<{ items: ChangeView[]; next_cursor: string | null }> {
  let query = db.selectFrom('admin_changes').selectAll();
  if (q.entity) query = query.where('entity', '=', q.entity);
  if (q.entity_id) query = query.where('entity_id', '=', q.entity_id);
  if (q.actor) query = query.where('actor', '=', q.actor);
  if (q.cursor) {
    const c = decodeCursor(q.cursor);
    query = query.where((eb) => eb(eb.refTuple('at', 'id'), '<', eb.tuple(c.at, c.id)));
  }
  const rows = await query.orderBy('at', 'desc').orderBy('id', 'desc').limit(q.limit + 1).execute();
  const page = rows.slice(0, q.limit);
  const last = page.at(-1);
  return {
    items: page.map((r) => ({
      id: r.id,
      at: new Date(r.at).toISOString(),
      actor: r.actor,
      action: r.action as Action,
      entity: r.entity as Entity,
      entity_id: r.entity_id,
      before: r.before === null ? null : JSON.parse(r.before),
      after: r.after === null ? null : JSON.parse(r.after),
      request_id: r.request_id,
      impact: r.impact === null ? null : JSON.parse(r.impact) as ImpactSummary,
    })),
    next_cursor: rows.length > q.limit && last ? encodeCursor(last.at, last.id) : null,
  };
}
