import { randomBytes } from 'node:crypto';
import type { Context } from 'koa';
import type { SessionStore } from '../cluster/index.ts';

/**
 * One playground per browser: the browser holds only a random id, in a signed HttpOnly cookie scoped to
 * /playground; the state (tokens, recorded requests) stays on the server, in memory, bounded (the least
 * recently used go first) and forgotten an hour after its last use. It is never written to the database (it
 * holds tokens). With several workers it is kept by the cluster's primary (src/cluster), so any worker serves
 * a browser's next request; a restart, or another machine, starts over.
 */

const COOKIE = 'idjag.playground';
export const SESSION_TTL_MS = 60 * 60_000;
export const MAX_SESSIONS = 500;

const ID = /^[A-Za-z0-9_-]{43}$/;

/** A browser's state for one request; `save()` keeps what the request changed. */
export interface OpenSession<T> {
  state: T;
  save(): Promise<void>;
}

export class Sessions<T extends object> {
  readonly #store: SessionStore<T>;
  readonly #fresh: () => T;

  constructor(fresh: () => T, store: SessionStore<T>) {
    this.#fresh = fresh;
    this.#store = store;
  }

  /** This browser's state; a fresh one (with a new id) when it has none, or it expired or was evicted. */
  async open(ctx: Context): Promise<OpenSession<T>> {
    const id = ctx.cookies.get(COOKIE, { signed: true });
    const known = id !== undefined && ID.test(id) ? await this.#store.get(id) : undefined;
    if (known) {
      this.#setCookie(ctx, id!);
      return this.#session(id!, known);
    }
    return this.#start(ctx);
  }

  /** Forgets this browser's state and starts a new one. */
  async reset(ctx: Context): Promise<OpenSession<T>> {
    const id = ctx.cookies.get(COOKIE, { signed: true });
    if (id !== undefined && ID.test(id)) await this.#store.delete(id);
    return this.#start(ctx);
  }

  async #start(ctx: Context): Promise<OpenSession<T>> {
    const id = randomBytes(32).toString('base64url');
    const session = this.#session(id, this.#fresh());
    await session.save();
    this.#setCookie(ctx, id);
    return session;
  }

  #session(id: string, state: T): OpenSession<T> {
    return { state, save: () => this.#store.set(id, state) };
  }

  #setCookie(ctx: Context, id: string) {
    ctx.cookies.set(COOKIE, id, {
      signed: true, httpOnly: true, sameSite: 'lax', secure: ctx.secure, path: '/playground', maxAge: SESSION_TTL_MS, overwrite: true,
    });
  }
}
