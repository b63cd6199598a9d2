import { errors } from 'oidc-provider';
import { z } from 'zod';

/**
 * The errors every part throws, and the one classifier every boundary uses to answer them. Two families:
 * - OAuthError: an OAuth error response (RFC 6749 §5.2: `error`, `error_description`) with its HTTP status,
 *   thrown inside the provider's routes (the grant, client authentication), which render it;
 * - HttpError: a page or JSON error of our own routes (admin, sign-in, diagnostics), with a status and a
 *   message safe to show.
 * Anything else is a fault: logged, and answered with a plain 500 that says nothing of it.
 */

/** An OAuth error response the provider renders as it is, whatever the status (a 429 or 503 included). */
export class OAuthError extends errors.OIDCProviderError {
  constructor(error: string, description: string, status = 400) {
    super(status, error);
    this.error_description = description;
    // the provider hides what a 5xx says unless it is marked safe to show: these descriptions are written for the client
    this.expose = true;
  }
}

/** Where in the input a problem is, and what it is (the admin's forms put each next to its field). */
export interface Issue {
  /** field names and array indexes; empty for the input as a whole */
  path: (string | number)[];
  message: string;
}

/** An error of our own routes, with a message written for whoever made the request. */
export class HttpError extends Error {
  readonly status: number;
  /** the OAuth-style code for JSON answers */
  readonly code: string;
  readonly headers: Record<string, string>;
  readonly issues: Issue[];

  constructor(status: number, message: string, opts: { code?: string; headers?: Record<string, string>; issues?: Issue[] } = {}) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = opts.code ?? codeFor(status);
    this.headers = opts.headers ?? {};
    this.issues = opts.issues ?? [];
  }
}

export const badRequest = (message: string) => new HttpError(400, message, { code: 'invalid_request' });
export const notFound = (message: string) => new HttpError(404, message, { code: 'not_found' });
export const forbidden = (message: string) => new HttpError(403, message, { code: 'access_denied' });

function codeFor(status: number): string {
  if (status === 401) return 'invalid_client';
  if (status === 403) return 'access_denied';
  if (status === 404) return 'not_found';
  if (status === 429 || status === 503) return 'temporarily_unavailable';
  return status >= 500 ? 'server_error' : 'invalid_request';
}

/** What a boundary answers for an error, and whether it is a fault to log. */
export interface Classified {
  status: number;
  code: string;
  message: string;
  headers: Record<string, string>;
  issues: Issue[];
  /** an unexpected error: log it; the message is a generic one */
  fault: boolean;
}

export const FAULT_MESSAGE = 'an unexpected error occurred; it has been logged';

const zodIssues = (err: z.ZodError): Issue[] => err.issues.map((i) => ({
  path: i.path.map((p) => (typeof p === 'symbol' ? String(p) : p)),
  message: i.message,
}));

/** SQLite and PostgreSQL unique and foreign-key violations: two writers raced for the same key. */
const isConstraintRace = (code: unknown): boolean =>
  typeof code === 'string' && (code.startsWith('SQLITE_CONSTRAINT') || code === '23505' || code === '23503');

/**
 * One classification for every boundary (the app's last resort, the admin API and UI, the sign-in pages):
 * our own HttpErrors, input that failed its schema, a constraint race, and koa's `ctx.throw` errors marked
 * `expose` (its body parsers: 413, 415) say what they say; everything else is a fault, answered without detail.
 */
export function classify(err: unknown): Classified {
  const none = { headers: {}, issues: [] };
  if (err instanceof HttpError) return { status: err.status, code: err.code, message: err.message, headers: err.headers, issues: err.issues, fault: err.status >= 500 };
  if (err instanceof z.ZodError) {
    const issues = zodIssues(err);
    return { ...none, status: 400, code: 'invalid_request', message: issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ') || 'invalid input', issues, fault: false };
  }
  const e = err as { status?: unknown; expose?: unknown; message?: unknown; error_description?: unknown; code?: unknown } | undefined;
  if (e && isConstraintRace(e.code)) {
    return { ...none, status: 409, code: 'conflict', message: 'the change conflicts with one made at the same time; reload and retry', fault: false };
  }
  if (e && typeof e.status === 'number' && e.status >= 400 && e.status < 500 && e.expose === true) {
    const message = typeof e.error_description === 'string' ? e.error_description : typeof e.message === 'string' ? e.message : 'the request was refused';
    return { ...none, status: e.status, code: 'invalid_request', message, fault: false };
  }
  return { ...none, status: 500, code: 'server_error', message: FAULT_MESSAGE, fault: true };
}
