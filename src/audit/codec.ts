/**
 * The audit row's format, in one place: what the writer encodes and every reader (the admin's query and
 * exports, the client diagnostics view) decodes. A check is stored by name with its outcome and messages;
 * its section and OAuth error follow from the name (src/exchange/checks.ts), so they are not stored.
 */

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
 * A check list is stored compactly, since every decision writes one (25 checks for an ID Token exchange): a check
 * that passed with nothing to say is its bare name, one not reached `-name`, any other `[name, status letter,
 * message, explanation]` with trailing empties left off. Rows written before in the long form (one object per
 * check) read the same.
 */
const LETTER: Record<CheckStatus, string> = { passed: 'p', failed: 'f', not_reached: 'n' };
const BY_LETTER: Record<string, CheckStatus> = { p: 'passed', f: 'failed', n: 'not_reached' };

function encodeCheck(c: CheckRecord): string | (string | null)[] {
  if (c.message === undefined && c.explanation === undefined) {
    if (c.status === 'passed') return c.name;
    if (c.status === 'not_reached') return `-${c.name}`;
  }
  const tuple: (string | null)[] = [c.name, LETTER[c.status]];
  if (c.message !== undefined || c.explanation !== undefined) tuple.push(c.message ?? null);
  if (c.explanation !== undefined) tuple.push(c.explanation);
  return tuple;
}

export const encodeChecks = (checks: readonly CheckRecord[]): string => JSON.stringify(checks.map(encodeCheck));

const STATUSES = new Set<string>(['passed', 'failed', 'not_reached']);

function decodeCheck(c: unknown): CheckRecord[] {
  if (typeof c === 'string') return c.startsWith('-') ? [{ name: c.slice(1), status: 'not_reached' }] : [{ name: c, status: 'passed' }];
  if (Array.isArray(c)) {
    const [name, letter, message, explanation] = c as unknown[];
    const status = typeof letter === 'string' ? BY_LETTER[letter] : undefined;
    if (typeof name !== 'string' || !status) return [];
    return [{ name, status, ...(typeof message === 'string' ? { message } : {}), ...(typeof explanation === 'string' ? { explanation } : {}) }];
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

/** A stored check list; anything that is not one (a hand-edited row) reads as no checks rather than failing the page. */
export function decodeChecks(stored: string): CheckRecord[] {
  let raw: unknown;
  try {
    raw = JSON.parse(stored);
  } catch {
    return [];
  }
  return Array.isArray(raw) ? raw.flatMap(decodeCheck) : [];
}

/** Warnings likewise: `[code, message, section]` each; rows of the long form (objects) read the same. */
export const encodeWarnings = (warnings: readonly WarningRecord[] | undefined): string | null =>
  (warnings?.length ? JSON.stringify(warnings.map((w) => [w.code, w.message, w.section])) : null);

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
    const [code, message, section] = Array.isArray(w) ? w as unknown[]
      : w && typeof w === 'object' ? [(w as WarningRecord).code, (w as WarningRecord).message, (w as WarningRecord).section] : [];
    return typeof code === 'string' && typeof message === 'string' && typeof section === 'string' ? [{ code, message, section }] : [];
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
