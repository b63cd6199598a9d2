import { createHash } from 'node:crypto';
import type { Context, Next } from 'koa';
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import { RateLimiterPostgres, RateLimiterRes, RateLimiterSQLite, type RateLimiterStoreAbstract } from 'rate-limiter-flexible';
import type { Config } from '../config/index.ts';
import { withStatementCache, type Database, type DB, type SqliteDatabase } from '../db/index.ts';
import type { GrantWrapper } from '../oidc/provider.ts';

/**
 * Throttling (issue 7), on rate-limiter-flexible: sign-in brute force per account and per IP, and request
 * rates per client at the token endpoint. Counters live in the database, not in memory, so every node of a
 * deployment sees the same ones: the library's RateLimiterSQLite over the connection kysely uses, or its
 * RateLimiterPostgres over kysely's pool, both on the `rate_limits` table (migration 0007, which both
 * limiters' queries fit).
 */

export type ThrottleSettings = Pick<Config, 'loginAccountFailures' | 'loginAccountBlock' | 'loginAccountBlockMax' | 'loginIpFailures' | 'tokenRateLimit'>;

export const RATE_LIMIT_TABLE = 'rate_limits';

/** Which limit refused a request: the sign-in's per account or per IP, the token endpoint's per client, public client IP or IP. */
export const LIMITERS = ['login_account', 'login_ip', 'token_client', 'token_public', 'token_ip'] as const;
export type Limiter = (typeof LIMITERS)[number];

/** Measurements (src/metrics): every refusal, by the limit that refused it. */
export interface RateLimitObserver {
  observeRefusal(limiter: Limiter): void;
}

interface LimiterOptions {
  keyPrefix: string;
  points: number;
  /** seconds */
  duration: number;
  blockDuration?: number;
  inMemoryBlockOnConsumed?: number;
}

type LimiterFactory = (options: LimiterOptions) => RateLimiterStoreAbstract;
type SQLiteHandle = SqliteDatabase['sqlite'];

/**
 * The one place that knows where the counters are stored. The table is the migration's, and the periodic
 * cleanup purges it (`purgeExpiredRateLimits`), so no library timer outlives the database.
 */
function limiterFactory(database: Database): LimiterFactory {
  // PostgreSQL: kysely's own pool (the library takes a connection per query and gives it back). Its queries
  // are single statements (INSERT ... ON CONFLICT ... RETURNING), atomic across the nodes sharing the table.
  if (database.dialect === 'postgres') {
    const storeClient = database.pool;
    return (o) => new RateLimiterPostgres({
      ...o, storeClient, storeType: 'pool', tableName: RATE_LIMIT_TABLE, tableCreated: true, clearExpiredByTimeout: false,
    });
  }
  // The very connection kysely uses: a second one would wait for SQLite's write lock synchronously, on the
  // event loop, while a kysely transaction holds it. (So a counter write made while a kysely transaction is
  // open joins that transaction.)
  const storeClient = withStatementCache(database.sqlite);
  return (o) => new SQLiteLimiter({
    ...o, storeClient, storeType: 'better-sqlite3', tableName: RATE_LIMIT_TABLE, tableCreated: true, clearExpiredByTimeout: false,
  });
}

/**
 * The library runs its one upsert statement (INSERT ... ON CONFLICT ... RETURNING) inside an explicit
 * transaction, which doubles the cost of a counter write (a BEGIN and a COMMIT around it) for nothing: a
 * single statement is atomic in SQLite. Run it on its own. (This overrides an internal method of
 * rate-limiter-flexible 11.2: should it be renamed, the library's own transaction simply runs again.)
 */
class SQLiteLimiter extends RateLimiterSQLite {
  async _upsertTransactionBetterSQLite3(conn: SQLiteHandle, query: string, params: unknown[]): Promise<unknown> {
    return conn.prepare(query).get(...params);
  }
}

/** Deletes expired counters and blocks; the periodic cleanup calls it. */
export async function purgeExpiredRateLimits(db: DB, nowMs = Date.now()): Promise<number> {
  const r = await db.deleteFrom('rate_limits').where('expire', '<', nowMs).executeTakeFirst();
  return Number(r.numDeletedRows);
}

/** Keys fit the table's varchar(255) whatever a request sent (long usernames, client ids). */
const bounded = (key: string): string => (key.length <= 200 ? key : `sha256:${createHash('sha256').update(key).digest('base64url')}`);

/** Retry-After: whole seconds, at least 1. */
const seconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));

type Taken = { refused: false; res: RateLimiterRes } | { refused: true; res: RateLimiterRes };

/** consume(), with a refusal as a value; a store failure still throws. */
async function take(limiter: RateLimiterStoreAbstract, key: string): Promise<Taken> {
  try {
    return { refused: false, res: await limiter.consume(bounded(key)) };
  } catch (err) {
    if (err instanceof RateLimiterRes) return { refused: true, res: err };
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Sign-in

/** The account a sign-in attempt counts against: the username trimmed and case-folded, whether or not it exists. */
export const accountKey = (username: string): string => username.trim().normalize('NFKC').toLowerCase();

export type LoginVerdict =
  /** `attempt`: this attempt's number since the account's last success (0 when accounts are not throttled) */
  | { allowed: true; attempt: number }
  | { allowed: false; by: 'account' | 'ip'; retryAfter: number };

/** An account's run of attempts, and of blocks, is forgotten a day after it began (or at its next success). */
const ACCOUNT_MEMORY = 24 * 3600;
const IP_WINDOW = 3600;

/**
 * Sign-in brute force, after the library's "login endpoint protection" pattern with an escalating block:
 *
 * - per account: every attempt is counted before the password is checked (so a burst of parallel attempts
 *   cannot slip past the limit while the first ones are still being checked) and a success resets the count.
 *   The attempt that reaches `loginAccountFailures` and fails blocks the account for `loginAccountBlock`
 *   seconds; each further block in the run doubles, up to `loginAccountBlockMax`. After a block the account
 *   gets a fresh set of attempts.
 * - per IP: `loginIpFailures` unsuccessful attempts (failed or refused) per hour; the next one blocks the IP
 *   for an hour. A success is not counted.
 *
 * A refused attempt is answered before any password check, and the same way whether or not the account exists.
 */
export class LoginThrottle {
  readonly #attempts: RateLimiterStoreAbstract | undefined;
  readonly #blocks: RateLimiterStoreAbstract | undefined;
  readonly #ip: RateLimiterStoreAbstract | undefined;
  readonly #block: number;
  readonly #maxBlock: number;
  readonly #observe: RateLimitObserver | undefined;

  constructor(limiter: LimiterFactory, s: ThrottleSettings, observe?: RateLimitObserver) {
    this.#observe = observe;
    if (s.loginAccountFailures > 0) {
      this.#attempts = limiter({ keyPrefix: 'login_account', points: s.loginAccountFailures, duration: ACCOUNT_MEMORY });
      this.#blocks = limiter({ keyPrefix: 'login_account_blocks', points: 1_000_000, duration: ACCOUNT_MEMORY });
    }
    if (s.loginIpFailures > 0) {
      this.#ip = limiter({ keyPrefix: 'login_ip', points: s.loginIpFailures, duration: IP_WINDOW, blockDuration: IP_WINDOW });
    }
    this.#block = s.loginAccountBlock;
    this.#maxBlock = Math.max(s.loginAccountBlock, s.loginAccountBlockMax);
  }

  /** Counts an attempt; says whether its password may be checked at all. */
  async attempt(username: string, ip: string): Promise<LoginVerdict> {
    if (this.#ip) {
      const t = await take(this.#ip, ip);
      if (t.refused) {
        this.#observe?.observeRefusal('login_ip');
        return { allowed: false, by: 'ip', retryAfter: seconds(t.res.msBeforeNext) };
      }
    }
    if (!this.#attempts) return { allowed: true, attempt: 0 };
    const t = await take(this.#attempts, accountKey(username));
    // A refusal normally finds the block (expiring within maxBlock); one racing the attempt that is about to
    // set it finds the day-long window instead: cap what it is told.
    if (t.refused) {
      this.#observe?.observeRefusal('login_account');
      return { allowed: false, by: 'account', retryAfter: Math.min(seconds(t.res.msBeforeNext), this.#maxBlock) };
    }
    return { allowed: true, attempt: t.res.consumedPoints };
  }

  /** After a failed attempt: the last one allowed blocks the account. Returns the block's seconds, if it set one. */
  async failed(username: string, attempt: number): Promise<number | undefined> {
    if (!this.#attempts || !this.#blocks || attempt < this.#attempts.points) return undefined;
    const key = bounded(accountKey(username));
    const nth = (await this.#blocks.penalty(key)).consumedPoints;
    const secs = Math.min(this.#block * 2 ** (nth - 1), this.#maxBlock);
    await this.#attempts.block(key, secs);
    return secs;
  }

  /** After a success: the account's run is over, and the attempt does not count against the IP. */
  async succeeded(username: string, ip: string): Promise<void> {
    const key = bounded(accountKey(username));
    await Promise.all([this.#attempts?.delete(key), this.#blocks?.delete(key), this.#ip?.reward(bounded(ip))]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Token endpoint

/** What a throttled token request left in `ctx.state.throttled`, for the exchange's audit row. */
export interface Throttled {
  key: string;
  limit: number;
  retryAfter: number;
  description: string;
}

export const throttledRequest = (ctx: { state: Record<string, unknown> }): Throttled | undefined => ctx.state.throttled as Throttled | undefined;

const TOKEN_PATH = '/token';
const TOKEN_WINDOW = 60;

/**
 * Requests per minute at the token endpoint, counted where the provider has authenticated the client and
 * before the grant does any work: the provider's grants (and the token exchange) are wrapped, so the key is
 * the client the provider authenticated (by Basic, body credentials or a client assertion) and no one can
 * spend another client's budget by naming it. Requests without client authentication count per IP, against
 * the same limit, in two buckets: public clients (`public:<ip>`), and missing or failed client
 * authentication (`ip:<ip>`), which is counted after the provider answers and refused in front of it, before
 * any body parsing or secret checking (a wrong secret costs a scrypt).
 *
 * Over the limit: 429 with `Retry-After` and `{"error":"temporarily_unavailable", ...}` (OAuth defines no
 * error code for rate limiting; RFC 6749 §5.2 errors are 400s, and this one says to come back later).
 * Once a key is over, this node refuses it from memory until the window ends (the library's in-memory block).
 */
export class TokenThrottle {
  readonly #limiter: RateLimiterStoreAbstract | undefined;
  readonly #log: Logger;
  readonly #observe: RateLimitObserver | undefined;

  constructor(limiter: LimiterFactory, perMinute: number, log: Logger, observe?: RateLimitObserver) {
    this.#log = log;
    this.#observe = observe;
    if (perMinute > 0) {
      this.#limiter = limiter({ keyPrefix: 'token', points: perMinute, duration: TOKEN_WINDOW, inMemoryBlockOnConsumed: perMinute + 1 });
    }
  }

  /** Every grant's handler, built in or registered, runs after this check (see buildProvider's `wrapGrant`). */
  readonly wrapGrant: GrantWrapper = (_grantType, handler) => async (ctx) => {
    await this.#check(ctx);
    return handler(ctx);
  };

  /** In front of the provider: refuses an IP over its limit, and counts what reached no grant (see the class). */
  readonly middleware = async (ctx: Context, next: Next): Promise<void> => {
    const limiter = this.#limiter;
    if (!limiter || ctx.method !== 'POST' || ctx.path !== TOKEN_PATH) return next();
    const address = `ip:${ctx.ip}`;
    const seen = await limiter.get(bounded(address)).catch((err: unknown) => {
      this.#log.error({ err }, 'token rate limit unavailable; request allowed');
      return null;
    });
    if (seen && seen.consumedPoints >= limiter.points && seen.msBeforeNext > 0) {
      const retryAfter = seconds(seen.msBeforeNext);
      this.#observe?.observeRefusal('token_ip');
      ctx.status = 429;
      ctx.set('Retry-After', String(retryAfter));
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: 'temporarily_unavailable', error_description: describe(undefined, retryAfter) };
      return;
    }
    await next();
    if (ctx.state.tokenRequestCounted) return;
    // Refused before any grant ran: count it against the client the provider authenticated, or the IP.
    const client = (ctx as unknown as KoaContextWithOIDC).oidc?.client;
    const key = !client || ctx.status === 401 ? address : keyOf(client, ctx.ip);
    try {
      await take(limiter, key);
    } catch (err) {
      this.#log.error({ err }, 'token rate limit unavailable');
    }
  };

  async #check(ctx: KoaContextWithOIDC): Promise<void> {
    const limiter = this.#limiter;
    if (!limiter) return;
    ctx.state.tokenRequestCounted = true;
    const client = ctx.oidc.client;
    if (!client) return;
    const key = keyOf(client, ctx.ip);
    let t: Taken;
    try {
      t = await take(limiter, key);
    } catch (err) {
      // Availability over strictness: a broken counter store must not take the token endpoint down with it.
      this.#log.error({ err }, 'token rate limit unavailable; request allowed');
      return;
    }
    if (!t.refused) return;
    this.#observe?.observeRefusal(key.startsWith('client:') ? 'token_client' : 'token_public');
    const retryAfter = seconds(t.res.msBeforeNext);
    const description = describe(key.startsWith('client:') ? client.clientId : undefined, retryAfter);
    // once per window and key (later refusals come from memory, with no count)
    if (t.res.consumedPoints === limiter.points + 1) this.#log.warn({ event: 'token.rate_limited', key, limit: limiter.points, retryAfter }, 'token endpoint rate limit reached');
    ctx.state.throttled = { key, limit: limiter.points, retryAfter, description } satisfies Throttled;
    ctx.set('Retry-After', String(retryAfter));
    const err = new errors.CustomOIDCProviderError('temporarily_unavailable', description);
    throw Object.assign(err, { status: 429, statusCode: 429 });
  }
}

/** An authenticated client's own bucket; a public client's requests count per IP. */
const keyOf = (client: { clientId: string; clientAuthMethod?: string | undefined }, ip: string): string =>
  (client.clientAuthMethod === 'none' ? `public:${ip}` : `client:${client.clientId}`);

function describe(clientId: string | undefined, retryAfter: number): string {
  return clientId === undefined
    ? `rate limit exceeded for requests without client authentication from this address; retry after ${retryAfter} s`
    : `rate limit exceeded for client ${clientId}; retry after ${retryAfter} s`;
}

// ---------------------------------------------------------------------------------------------------------

export interface RateLimits {
  login: LoginThrottle;
  token: TokenThrottle;
}

export function createRateLimits(database: Database, settings: ThrottleSettings, log: Logger, observe?: RateLimitObserver): RateLimits {
  const limiter = limiterFactory(database);
  return { login: new LoginThrottle(limiter, settings, observe), token: new TokenThrottle(limiter, settings.tokenRateLimit, log, observe) };
}
