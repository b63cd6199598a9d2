import { randomBytes } from 'node:crypto';
import type { Context } from 'koa';
import { LRUCache } from 'lru-cache';

/**
 * One playground per browser: the browser holds only a random id, in a signed HttpOnly cookie scoped to
 * /playground; the state (tokens, recorded requests) stays on the server, in memory, bounded (the least
 * recently used go first) and forgotten an hour after its last use. A restart, or another node, starts over.
 */

const COOKIE = 'idjag.playground';
export const SESSION_TTL_MS = 60 * 60_000;
export const MAX_SESSIONS = 500;

const ID = /^[A-Za-z0-9_-]{43}$/;

export class Sessions<T extends object> {
  readonly #store: LRUCache<string, T>;
  readonly #fresh: () => T;

  constructor(fresh: () => T, options: { max?: number; ttlMs?: number } = {}) {
    this.#fresh = fresh;
    this.#store = new LRUCache<string, T>({ max: options.max ?? MAX_SESSIONS, ttl: options.ttlMs ?? SESSION_TTL_MS, updateAgeOnGet: true });
  }

  /** This browser's state; a fresh one (with a new id) when it has none, or it expired or was evicted. */
  of(ctx: Context): T {
    const id = ctx.cookies.get(COOKIE, { signed: true });
    const known = id !== undefined && ID.test(id) ? this.#store.get(id) : undefined;
    if (known) {
      this.#setCookie(ctx, id!);
      return known;
    }
    return this.#start(ctx);
  }

  /** Forgets this browser's state and starts a new one. */
  reset(ctx: Context): T {
    const id = ctx.cookies.get(COOKIE, { signed: true });
    if (id !== undefined) this.#store.delete(id);
    return this.#start(ctx);
  }

  get size(): number {
    return this.#store.size;
  }

  #start(ctx: Context): T {
    const id = randomBytes(32).toString('base64url');
    const state = this.#fresh();
    this.#store.set(id, state);
    this.#setCookie(ctx, id);
    return state;
  }

  #setCookie(ctx: Context, id: string) {
    ctx.cookies.set(COOKIE, id, {
      signed: true, httpOnly: true, sameSite: 'lax', secure: ctx.secure, path: '/playground', maxAge: SESSION_TTL_MS, overwrite: true,
    });
  }
}
