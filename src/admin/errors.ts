import type { z } from 'zod';
import { HttpError, type Issue } from '../web/errors.ts';

export type { Issue } from '../web/errors.ts';

/**
 * What the admin layer refuses, as data: a status, an OAuth-style error code, and the offending fields. The
 * JSON API serialises it as is; the HTML UI puts each message next to its field. Every boundary classifies it
 * with the rest (src/web/errors.ts).
 */
export class AdminError extends HttpError {
  constructor(status: number, code: string, message: string, issues: Issue[] = []) {
    super(status, message, { code, issues });
    this.name = 'AdminError';
  }
}

/** 400: the input does not parse, or does not fit what is stored (unknown client, undefined scope, duplicate...). */
export class InvalidInput extends AdminError {
  constructor(issues: Issue[], message = issues.map(describe).join('; ')) {
    super(400, 'invalid_request', message || 'invalid input', issues);
  }
}

/** 404: the entity named in the URL does not exist. */
export class NotFound extends AdminError {
  constructor(entity: string, id: string) {
    super(404, 'not_found', `no ${entity} ${id}`);
  }
}

/** 409: the change is well-formed but other entities depend on the current state (rules naming a client...). */
export class Conflict extends AdminError {
  constructor(message: string, issues: Issue[] = []) {
    super(409, 'conflict', message, issues);
  }
}

function describe(i: Issue): string {
  return i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message;
}

export function invalid(path: (string | number)[], message: string): InvalidInput {
  return new InvalidInput([{ path, message }]);
}

export function fromZod(error: z.ZodError, prefix: (string | number)[] = []): InvalidInput {
  return new InvalidInput(error.issues.map((i) => ({
    path: [...prefix, ...i.path.map((p) => (typeof p === 'symbol' ? String(p) : p))],
    message: i.message,
  })));
}

/** The boundary: raw input in, typed value out, or an InvalidInput naming every bad field. */
export function parseInput<S extends z.ZodType>(schema: S, raw: unknown, prefix: (string | number)[] = []): z.output<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw fromZod(parsed.error, prefix);
  return parsed.data;
}
