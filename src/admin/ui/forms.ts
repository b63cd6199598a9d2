import type { Context } from 'koa';
import { z } from 'zod';
import { AdminError, fromZod, InvalidInput, type Issue } from '../errors.ts';

/**
 * HTML forms onto the domain layer's inputs. A form sends strings only; here an empty field is an absent
 * one, a list is typed as words separated by commas, spaces or new lines, a checkbox is present or not, and a
 * number that is not one is reported at its field. The result goes through the domain's own zod schema, so the
 * UI accepts exactly what the JSON API accepts.
 */
export class Form {
  readonly params: URLSearchParams;
  readonly issues: Issue[] = [];

  constructor(params: URLSearchParams) {
    this.params = params;
  }

  /**
   * The submitted fields as the browser sent them. Re-read from the raw body rather than taken from the body
   * parser's object: its `qs` parsing turns `a.b` and `a[b]` into nested objects, while a form is a flat list.
   */
  static of(ctx: Context): Form {
    const raw = (ctx.request as { rawBody?: unknown }).rawBody;
    return new Form(new URLSearchParams(typeof raw === 'string' ? raw : ''));
  }

  static query(ctx: Context): Form {
    return new Form(new URLSearchParams(ctx.querystring));
  }

  /** Trimmed text; empty is absent. */
  text(name: string): string | undefined {
    const v = this.params.get(name)?.trim();
    return v ? v : undefined;
  }

  /** Text a field must have. */
  required(name: string, message: string): string {
    const v = this.text(name);
    if (v === undefined) this.issues.push({ path: [name], message });
    return v ?? '';
  }

  /** Exactly as typed (passwords); empty is absent. */
  raw(name: string): string | undefined {
    const v = this.params.get(name);
    return v ? v : undefined;
  }

  /** Words separated by commas, spaces or new lines (scopes, groups, usernames), without repeats. */
  words(name: string): string[] {
    return [...new Set((this.params.get(name) ?? '').split(/[\s,]+/).filter(Boolean))];
  }

  /** One value per line or space (URIs, which may contain commas). */
  lines(name: string): string[] {
    return [...new Set((this.params.get(name) ?? '').split(/\s+/).filter(Boolean))];
  }

  /** Every value of a repeated field (a group of checkboxes). */
  all(name: string): string[] {
    return [...new Set(this.params.getAll(name).map((v) => v.trim()).filter(Boolean))];
  }

  checked(name: string): boolean {
    return this.params.has(name);
  }

  /** A whole number, or absent; anything else is an issue at the field. */
  int(name: string): number | undefined {
    const v = this.text(name);
    if (v === undefined) return undefined;
    if (!/^-?\d{1,15}$/.test(v)) {
      this.issues.push({ path: [name], message: 'enter a whole number' });
      return undefined;
    }
    return Number(v);
  }

  /** The first value of every field, to fill the form in again after an error. */
  values(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of this.params) if (!(k in out) && k !== '_csrf') out[k] = v;
    return out;
  }

  /** Parses `raw` with the domain schema; the form's own issues and the schema's are reported together. */
  parse<S extends z.ZodType>(schema: S, raw: unknown): z.output<S> {
    const parsed = schema.safeParse(raw);
    const flagged = new Set(this.issues.map((i) => String(i.path[0])));
    const issues = [...this.issues, ...(parsed.success ? [] : fromZod(parsed.error).issues.filter((i) => !flagged.has(String(i.path[0]))))];
    if (issues.length) throw new InvalidInput(issues);
    return (parsed as { data: z.output<S> }).data;
  }
}

/**
 * A `datetime-local` field has no zone; the pages show UTC, so its value is read as UTC. ISO 8601 with an
 * offset, a date, or epoch milliseconds pass through as typed (the domain's schema reads them).
 */
export function timeInput(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(value) ? `${value.length === 16 ? `${value}:00` : value}Z` : value;
}

/** Drops absent fields, so an object literal can list every field and the schema sees only the given ones. */
export function defined<T extends Record<string, unknown>>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** What the domain refused, as issues; undefined for errors that are not the admin's to fix. */
export function issuesOf(err: unknown): Issue[] | undefined {
  if (err instanceof AdminError) return err.issues.length ? err.issues : [{ path: [], message: err.message }];
  if (err instanceof z.ZodError) return fromZod(err).issues;
  return undefined;
}

/**
 * Runs what a GET form asks for; what the admin typed wrong comes back as field errors (and a 400) instead of an
 * error page, so the form is shown again with each message at its field. Anything else is thrown on.
 */
export async function withFieldErrors<T>(ctx: { status: number }, shown: readonly string[], run: () => Promise<T>): Promise<{ result?: T } & FieldErrors> {
  try {
    return { result: await run(), fields: {}, general: [] };
  } catch (err) {
    const issues = issuesOf(err);
    if (!issues) throw err;
    ctx.status = 400;
    return fieldErrors(issues, shown);
  }
}

export interface FieldErrors {
  /** field name to its messages, joined */
  fields: Record<string, string>;
  /** messages about the input as a whole, or about fields this form does not show */
  general: string[];
}

/**
 * Files each issue at the form field that shows it. `field` maps an issue path to a field name (the default
 * is the path's first element), returning undefined for paths no field shows.
 */
export function fieldErrors(issues: Issue[], shown: readonly string[], field: (path: Issue['path']) => string | undefined = (p) => (p.length ? String(p[0]) : undefined)): FieldErrors {
  const fields: Record<string, string[]> = {};
  const general: string[] = [];
  for (const issue of issues) {
    const name = field(issue.path);
    if (name !== undefined && shown.includes(name)) (fields[name] ??= []).push(issue.message);
    else general.push(issue.path.length ? `${issue.path.join('.')}: ${issue.message}` : issue.message);
  }
  return { fields: Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, [...new Set(v)].join('; ')])), general };
}
