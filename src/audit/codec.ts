/**
 * The audit row's format, in one place: what the writer encodes and every reader (the admin's query and
 * exports, the client diagnostics view) decodes. A check is stored by code with its outcome and what it said
 * that the row does not say already; its section and OAuth error follow from the name
 * (src/exchange/checks.ts), so they are not stored.
 */
import { WARNING_CODES, WARNINGS } from '../exchange/lint.ts';

export type CheckStatus = 'passed' | 'failed' | 'not_reached';

/** What the audit row keeps of a check: what varies from one request to the next. */
export interface CheckRecord {
  name: string;
  status: CheckStatus;
  /** what the client was told (its own diagnostics view shows it) */
  message?: string;
  /** what only the admin may read, when it says more than `message` (rule ids, groups) */
  explanation?: string;
}

/** A warning about a request that worked but is discouraged (src/exchange/lint.ts). */
export interface WarningRecord {
  code: string;
  message: string;
  section: string;
}

/** Request-supplied strings are stored bounded, so a hostile request cannot bloat a row. */
export const MAX_TEXT = 2048;
export const text = (v: string | undefined, max = MAX_TEXT): string | null => (v === undefined ? null : v.slice(0, max));

/**
 * A check's code in the stored form: its index here. Append only: a stored row names its checks by these
 * numbers, so a code is never reused or moved (a retired check keeps its code).
 */
export const CHECK_CODES: readonly string[] = [
  'client_authentication', 'request_syntax', 'confidential_client', 'grant_type_allowed', 'requested_token_type',
  'subject_token_type', 'subject_token_present', 'audience_present', 'actor_token', 'id_token.format',
  'id_token.algorithm', 'id_token.key', 'id_token.signature', 'id_token.issuer', 'id_token.audience',
  'id_token.expiry', 'id_token.issued_at', 'id_token.subject', 'refresh_token', 'user',
  'audience', 'resource', 'policy', 'scope', 'step_up',
  'issue', 'dpop_proof', 'authorization_details.format', 'authorization_details.types', 'rate_limit',
  'unsupported_parameters', 'refresh_token.found', 'refresh_token.client', 'refresh_token.live',
];
const CODE_OF: ReadonlyMap<string, number> = new Map(CHECK_CODES.map((name, i) => [name, i]));

/** The row's own columns a check's message may repeat (as they read, not as stored): what is stored there need not be stored twice. */
export interface RowFacts {
  audience: string | null;
  /** as stored (encodeResources) */
  resources: string | null;
  username: string | null;
  explanation: string;
  scopes_granted: string | null;
  /** as it reads (decodeOwnId) */
  jti: string | null;
  exp: number | null;
  /** the interned values a check list may name by number (audit_values; src/audit/values.ts) */
  values?: ReadonlyMap<number, string> | undefined;
}

/**
 * The checks whose message, when they pass, repeats across many rows: it is stored once in `audit_values` and
 * named by its number there. The ID Token's `kid` is one of the IdP's few keys, but 43 characters in every row.
 * A failed check's message is not interned: it quotes the request, whose values are unbounded.
 */
export const INTERNED_CHECKS: ReadonlySet<string> = new Set(['id_token.key']);

/** The messages of a check list that encodeChecks stores as numbers, once audit_values has given them one. */
export const internable = (checks: readonly CheckRecord[]): string[] =>
  [...new Set(checks.flatMap((c) => (c.status === 'passed' && INTERNED_CHECKS.has(c.name) && c.message !== undefined && c.explanation === undefined ? [c.message] : [])))];

/** What the ID-JAG's issue check says: the token's id and expiry (src/exchange/mint.ts writes it so). */
export const issuedDescription = (jti: string, exp: number): string => `jti ${jti}, expires ${new Date(exp * 1000).toISOString()}`;

type Said = Pick<CheckRecord, 'message' | 'explanation'>;

/**
 * What a passed check says when all it says is in the row's columns (the pipeline passes these checks so),
 * or is what it says nearly always. These are part of the stored format: a row stores a check by code alone
 * when it said exactly this, so a literal here is never changed (a new default would misread older rows).
 */
function derived(name: string, row: RowFacts | undefined): Said {
  switch (name) {
    case 'client_authentication': return { message: 'authenticated with client_secret_basic' };
    case 'id_token.algorithm': return { message: 'RS256' };
    default: break;
  }
  if (!row) return {};
  switch (name) {
    case 'audience': return row.audience === null ? {} : { message: row.audience };
    case 'resource': {
      if (row.resources === null) return {};
      const resources = decodeResources(row.resources);
      return { message: resources.length ? resources.join(' ') : 'none requested (audience-only)' };
    }
    case 'user': return row.username === null ? {} : { message: row.username };
    case 'policy': return { message: 'allowed', explanation: row.explanation };
    case 'scope': return row.scopes_granted === null ? {} : { message: row.scopes_granted };
    case 'issue': return row.jti === null || row.exp === null ? {} : { message: issuedDescription(row.jti, row.exp) };
    default: return {};
  }
}

/**
 * A check list is stored compactly, since every decision writes one (25 checks for an ID Token exchange), by
 * the codes above:
 *
 * - `n`: check n passed, and said nothing the row's columns do not say (see `derived`);
 * - `-n-1`: check n was not reached;
 * - `"a-b"`: checks a to b, each as `n`; `"-a-b"`: checks a to b, not reached (runs of three or more);
 * - `[n, status letter, message, explanation]` otherwise, trailing empties left off; a message that is a number
 *   is the value of that number in `audit_values` (see INTERNED_CHECKS).
 *
 * A name without a code is stored by name (`name`, `-name` or `[name, ...]`), as rows written before codes
 * were; rows of the long form (one object per check) read the same too.
 */
const LETTER: Record<CheckStatus, string> = { passed: 'p', failed: 'f', not_reached: 'n' };
const BY_LETTER: Record<string, CheckStatus> = { p: 'passed', f: 'failed', n: 'not_reached' };

function encodeCheck(c: CheckRecord, row: RowFacts | undefined, interned: ReadonlyMap<string, number> | undefined): number | string | (string | number | null)[] {
  const code = CODE_OF.get(c.name);
  const silent = c.message === undefined && c.explanation === undefined;
  if (code !== undefined) {
    if (c.status === 'passed') {
      const d = derived(c.name, row);
      if (d.message === c.message && d.explanation === c.explanation) return code;
    } else if (c.status === 'not_reached' && silent) {
      return -code - 1;
    }
  } else if (silent && !RANGE.test(c.name)) {
    if (c.status === 'passed') return c.name;
    if (c.status === 'not_reached') return `-${c.name}`;
  }
  const tuple: (string | number | null)[] = [code ?? c.name, LETTER[c.status]];
  const number = c.message === undefined || c.explanation !== undefined ? undefined : interned?.get(c.message);
  if (number !== undefined) tuple.push(number);
  else if (!silent) tuple.push(c.message ?? null);
  if (c.explanation !== undefined) tuple.push(c.explanation);
  return tuple;
}

type Entry = ReturnType<typeof encodeCheck>;

/** Runs of consecutive codes with the same outcome, as one range each (a check list is mostly such runs). */
function ranged(entries: Entry[]): Entry[] {
  const out: Entry[] = [];
  for (let i = 0; i < entries.length;) {
    const first = entries[i];
    let j = i + 1;
    if (typeof first === 'number') {
      const step = first >= 0 ? 1 : -1;
      while (j < entries.length && entries[j] === first + step * (j - i)) j++;
    }
    if (typeof first === 'number' && j - i >= 3) {
      const last = entries[j - 1] as number;
      out.push(first >= 0 ? `${first}-${last}` : `-${-first - 1}-${-last - 1}`);
    } else {
      out.push(...entries.slice(i, j));
    }
    i = j;
  }
  return out;
}

const RANGE = /^(-?)(\d+)-(\d+)$/;

/**
 * `row`: the row's columns as stored, so that what they say is not stored again in the list; `interned`: the
 * numbers audit_values gave the messages of `internable(checks)`.
 */
export const encodeChecks = (checks: readonly CheckRecord[], row?: RowFacts, interned?: ReadonlyMap<string, number>): string =>
  JSON.stringify(ranged(checks.map((c) => encodeCheck(c, row, interned))));

const STATUSES = new Set<string>(['passed', 'failed', 'not_reached']);

function decodeCheck(c: unknown, row: RowFacts | undefined): CheckRecord[] {
  if (typeof c === 'number') {
    const name = CHECK_CODES[c < 0 ? -c - 1 : c];
    if (name === undefined) return [];
    return c < 0 ? [{ name, status: 'not_reached' }] : [{ name, status: 'passed', ...withoutUndefined(derived(name, row)) }];
  }
  if (typeof c === 'string') {
    const range = RANGE.exec(c);
    if (range) {
      const [from, to] = [Number(range[2]), Number(range[3])];
      if (to < from || to >= CHECK_CODES.length) return [];
      return Array.from({ length: to - from + 1 }, (_, k) => decodeCheck(range[1] ? -(from + k) - 1 : from + k, row)).flat();
    }
    return c.startsWith('-') ? [{ name: c.slice(1), status: 'not_reached' }] : [{ name: c, status: 'passed' }];
  }
  if (Array.isArray(c)) {
    const [named, letter, message, explanation] = c as unknown[];
    const name = typeof named === 'number' ? CHECK_CODES[named] : named;
    const status = typeof letter === 'string' ? BY_LETTER[letter] : undefined;
    if (typeof name !== 'string' || !status) return [];
    const said = typeof message === 'number' ? row?.values?.get(message) : message;
    return [{ name, status, ...(typeof said === 'string' ? { message: said } : {}), ...(typeof explanation === 'string' ? { explanation } : {}) }];
  }
  if (!c || typeof c !== 'object') return [];
  // the long form of earlier rows
  const { name, status, message, explanation } = c as Record<string, unknown>;
  if (typeof name !== 'string' || typeof status !== 'string' || !STATUSES.has(status)) return [];
  return [{
    name, status: status as CheckStatus,
    ...(typeof message === 'string' ? { message } : {}),
    ...(typeof explanation === 'string' ? { explanation } : {}),
  }];
}

const withoutUndefined = (said: Said): Said => ({
  ...(said.message !== undefined ? { message: said.message } : {}),
  ...(said.explanation !== undefined ? { explanation: said.explanation } : {}),
});

/**
 * A stored check list, read with its row's columns (which fill in what the list left to them). Anything that is
 * not one (a hand-edited row) reads as no checks rather than failing the page.
 */
export function decodeChecks(stored: string, row?: RowFacts): CheckRecord[] {
  let raw: unknown;
  try {
    raw = JSON.parse(stored);
  } catch {
    return [];
  }
  return Array.isArray(raw) ? raw.flatMap((c) => decodeCheck(c, row)) : [];
}

const WARNING_CODE_OF: ReadonlyMap<string, number> = new Map(WARNING_CODES.map((code, i) => [code, i]));

/**
 * Warnings likewise, against their definitions (src/exchange/lint.ts): its number in WARNING_CODES when its
 * message and section are the defined ones, `[code, message]` when only its section is, `[code, message,
 * section]` otherwise; rows that named a defined warning by its code, and rows of the long form (objects),
 * read the same.
 */
export function encodeWarnings(warnings: readonly WarningRecord[] | undefined): string | null {
  if (!warnings?.length) return null;
  return JSON.stringify(warnings.map((w) => {
    const def = WARNINGS[w.code];
    if (def?.section !== w.section) return [w.code, w.message, w.section];
    return def.message === w.message ? WARNING_CODE_OF.get(w.code) ?? w.code : [w.code, w.message];
  }));
}

export function decodeWarnings(stored: string | null): WarningRecord[] {
  if (!stored) return [];
  let raw: unknown;
  try {
    raw = JSON.parse(stored);
  } catch {
    return [];
  }
  if (!Array.isArray(raw)) return [];
  return raw.flatMap((w: unknown) => {
    const [code, message, section] = typeof w === 'string' ? [w] : typeof w === 'number' ? [WARNING_CODES[w]] : Array.isArray(w) ? w as unknown[]
      : w && typeof w === 'object' ? [(w as WarningRecord).code, (w as WarningRecord).message, (w as WarningRecord).section] : [];
    if (typeof code !== 'string') return [];
    const def = WARNINGS[code];
    const m = typeof message === 'string' ? message : def?.message;
    const s = typeof section === 'string' ? section : def?.section;
    return typeof m === 'string' && typeof s === 'string' ? [{ code, message: m, section: s }] : [];
  });
}

/** The `resources` column: the requested resource identifiers as a JSON list, each bounded. */
export const encodeResources = (resources: readonly string[] | undefined): string | null =>
  (resources === undefined ? null : JSON.stringify(resources.map((s) => s.slice(0, MAX_TEXT))));

export function decodeResources(stored: string | null): string[] {
  if (!stored) return [];
  try {
    const raw = JSON.parse(stored) as unknown;
    return Array.isArray(raw) ? raw.filter((r): r is string => typeof r === 'string') : [];
  } catch {
    return [];
  }
}

/**
 * The `request_id` and `jti` columns: empty when they are the row's own id. A request whose id idjag generated
 * gets that id for its audit row, and an ID-JAG issued then carries it as its `jti`, so one identifier names
 * the request (X-Request-Id), its audit entry and the token, and the row does not store it three times.
 */
export const encodeOwnId = <T extends string | null>(value: T, id: string): T => (value === id ? '' : value) as T;
export const decodeOwnId = <T extends string | null>(stored: T, id: string): T => (stored === '' ? id : stored) as T;

/** A stored row with its `request_id` and `jti` as they read. */
export const withOwnIds = <R extends { id: string; request_id: string; jti: string | null }>(r: R): R =>
  ({ ...r, request_id: decodeOwnId(r.request_id, r.id), jti: decodeOwnId(r.jti, r.id) });

/** The `details_requested` and `details_granted` columns: RFC 9396 types as a JSON list, each bounded; null when none. */
export const encodeTypes = (types: readonly string[] | undefined): string | null =>
  (types === undefined ? null : JSON.stringify(types.map((t) => t.slice(0, 256))));

export function decodeTypes(stored: string | null): string[] | null {
  if (stored === null) return null;
  try {
    const raw = JSON.parse(stored) as unknown;
    return Array.isArray(raw) ? raw.filter((t): t is string => typeof t === 'string') : null;
  } catch {
    return null;
  }
}

/**
 * The `subject_token_type` and `actor_token_type` columns: a type of RFC 8693's registry namespace
 * (`urn:ietf:params:oauth:token-type:id_token`, ...), what nearly every request sends, is stored as `@` and its
 * last segment; anything else as sent, bounded, with a leading `@` doubled so that nothing reads back changed.
 */
const TOKEN_TYPE_NS = 'urn:ietf:params:oauth:token-type:';

export function encodeTokenType(type: string | undefined): string | null {
  if (type === undefined) return null;
  if (type.startsWith(TOKEN_TYPE_NS) && /^[a-z0-9_-]+$/.test(type.slice(TOKEN_TYPE_NS.length))) return `@${type.slice(TOKEN_TYPE_NS.length)}`;
  return (type.startsWith('@') ? `@${type}` : type).slice(0, 255);
}

export function decodeTokenType(stored: string | null): string | null {
  if (stored === null || !stored.startsWith('@')) return stored;
  return stored.startsWith('@@') ? stored.slice(1) : `${TOKEN_TYPE_NS}${stored.slice(1)}`;
}

/**
 * The `explanation` column: an ID-JAG's issue is explained as `allowed by rule r: scopes a b, lifetime 300 s`,
 * every word of which but the lifetime is in the row's `rule_id` and `scopes_granted`. Such an explanation is
 * stored as `=` and its lifetime; any other as written, with a leading `=` doubled. The sentence below is part
 * of the stored format: should the policy ever word it otherwise, its explanations are stored whole (they no
 * longer match), and rows stored short still read as they were written.
 */
const allowedSentence = (ruleIds: string[], scopes: string, lifetime: string): string =>
  `allowed by rule${ruleIds.length > 1 ? 's' : ''} ${ruleIds.join(', ')}: scopes ${scopes}, lifetime ${lifetime} s`;

type ExplainedBy = Pick<AuditRowText, 'rule_id' | 'scopes_granted'>;
interface AuditRowText { rule_id: string | null; scopes_granted: string | null; explanation: string }

export function encodeExplanation(explanation: string, row: ExplainedBy): string {
  const lifetime = /, lifetime (\d{1,9}) s$/.exec(explanation)?.[1];
  if (lifetime !== undefined && row.rule_id !== null && row.scopes_granted !== null
    && explanation === allowedSentence(decodeRuleIds(row.rule_id), row.scopes_granted, lifetime)) return `=${lifetime}`;
  return explanation.startsWith('=') ? `=${explanation}` : explanation;
}

/** A stored row's facts for decodeChecks: its columns as they read, and the interned values (src/audit/values.ts). */
export const rowFacts = (r: Omit<RowFacts, 'values'> & { id: string; rule_id: string | null }, values?: ReadonlyMap<number, string>): RowFacts => ({
  audience: r.audience, resources: r.resources, username: r.username, scopes_granted: r.scopes_granted, jti: decodeOwnId(r.jti, r.id), exp: r.exp,
  explanation: decodeExplanation(r), values,
});

export function decodeExplanation(row: AuditRowText): string {
  const stored = row.explanation;
  if (!stored.startsWith('=')) return stored;
  if (stored.startsWith('==')) return stored.slice(1);
  const lifetime = stored.slice(1);
  return /^\d{1,9}$/.test(lifetime) && row.rule_id !== null && row.scopes_granted !== null
    ? allowedSentence(decodeRuleIds(row.rule_id), row.scopes_granted, lifetime) : stored;
}

/** The `rule_id` column: the rules a decision named, comma-separated (rule ids have no commas). */
export const encodeRuleIds = (ids: readonly string[] | undefined): string | null => (ids?.length ? ids.join(',') : null);
export const decodeRuleIds = (stored: string | null): string[] => (stored ? stored.split(',') : []);

/** The name of the check that failed, if one did. */
export const failedCheck = (checks: readonly CheckRecord[]): string | undefined => checks.find((c) => c.status === 'failed')?.name;

/**
 * The index that serves the admin's filter by MCP server covers rows whose `resources` is at most this many
 * characters (migration 0008 creates it with the same number; a test holds the two together). A query that
 * names the same condition lets either planner use the partial index.
 */
export const RESOURCES_INDEXED_MAX = 512;
