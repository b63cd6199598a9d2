import { createHash } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import { RateLimiterPostgres, RateLimiterRes, RateLimiterSQLite, type RateLimiterStoreAbstract } from 'rate-limiter-flexible';
import type { Config } from '../config/index.ts';
import { withStatementCache, type Database, type DB, type SqliteDatabase } from '../db/index.ts';
import { accountKey } from '../oidc/accounts.ts';
import { ID_TOKEN, TOKEN_EXCHANGE, unverifiedSubject } from '../exchange/request.ts';
import type { ClientAuthGate, ClientAuthVerdict } from '../oidc/client-auth.ts';
import type { SignInThrottle } from '../oidc/interactions.ts';
import type { GrantWrapper } from '../oidc/provider.ts';
import { OAuthError } from '../web/errors.ts';
import type { Throttled } from '../web/state.ts';
import { SharedWindow, syncWindows, type WindowCount } from './window.ts';

/**
 * Throttling. Sign-in brute force per account and per IP, on rate-limiter-flexible: its counters live in the
 * database, written on every attempt, so every node of a deployment sees the same ones (the library's
 * RateLimiterSQLite over the connection kysely uses, or its RateLimiterPostgres over kysely's pool, both on the
 * `rate_limits` table of migration 0007). The token endpoint's rates and failed client authentications, which
 * every token request touches, are counted in memory and reconciled through the same table every second
 * (window.ts): a database write per request would cost more than the rest of the limit.
 */

export type ThrottleSettings = Pick<Config, 'loginAccountFailures' | 'loginAccountBlock' | 'loginAccountBlockMax' | 'loginIpFailures' | 'tokenRateLimit'
  | 'tokenUserRateLimit' | 'clientAuthIpFailures' | 'clientAuthClientFailures'>;

export const RATE_LIMIT_TABLE = 'rate_limits';

/**
 * Which limit refused a request: the sign-in's per account or per IP, the token endpoint's per client, per
 * public client's IP or per client and user, failed client authentications per IP or per client id.
 */
export const LIMITERS = ['login_account', 'login_ip', 'token_client', 'token_public', 'token_user', 'client_auth_ip', 'client_auth_client'] as const;
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
export class LoginThrottle implements SignInThrottle {
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

const TOKEN_WINDOW = 60;

/** The subject a token exchange acts for, before anything is verified: what its per-user budget is keyed by. */
function claimedSubject(params: Record<string, unknown> | undefined): string | undefined {
  const token = params?.subject_token;
  if (typeof token !== 'string' || token === '') return undefined;
  if (params?.subject_token_type !== ID_TOKEN) {
    // a refresh token stands for one user's session with this client: its hash is the key
    return `rt:${createHash('sha256').update(token).digest('base64url').slice(0, 22)}`;
  }
  return unverifiedSubject(token);
}

type TokenLimit = 'token_client' | 'token_public' | 'token_user';

/**
 * Requests per minute at the token endpoint, counted where the provider has authenticated the client and
 * before the grant does any work: the provider's grants (and the token exchange) are wrapped, so the key is
 * the client the provider authenticated (by Basic, body credentials or a client assertion) and no one can
 * spend another client's budget by naming it.
 *
 * - per client (`tokenRateLimit`): a ceiling, not a quota. One client id serves every user of an enterprise's
 *   MCP client, so it is set far above any one enterprise's traffic (600,000 a minute by default) and only
 *   stops a runaway or stolen client. A public client's requests count per IP (`public:<ip>`).
 * - per client and user (`tokenUserRateLimit`, token exchanges only): 300 a minute by default, far above what
 *   one person's MCP client needs (an exchange per MCP server per ID-JAG lifetime) and a brake on one user's
 *   runaway loop that leaves the client's other users alone. The user is the subject token's `sub` as sent
 *   (read, not yet verified, so that a refused request costs nothing; a forged `sub` only spends that
 *   client's own budget for that user), or for a refresh token its hash.
 *
 * Failed client authentication is not counted here but by the ClientAuthThrottle, on every endpoint.
 *
 * Over a limit: 429 with `Retry-After` and `{"error":"temporarily_unavailable", ...}` (OAuth defines no
 * error code for rate limiting; RFC 6749 §5.2 errors are 400s, and this one says to come back later).
 * Counted in memory and reconciled through the database every second (window.ts, for the bound across nodes).
 */
export class TokenThrottle {
  readonly #client: SharedWindow | undefined;
  readonly #user: SharedWindow | undefined;
  readonly #log: Logger;
  readonly #observe: RateLimitObserver | undefined;

  constructor(perClient: number, perUser: number, log: Logger, observe?: RateLimitObserver) {
    this.#log = log;
    this.#observe = observe;
    if (perClient > 0) this.#client = new SharedWindow({ prefix: 'token', limit: perClient, duration: TOKEN_WINDOW });
    if (perUser > 0) this.#user = new SharedWindow({ prefix: 'token_user', limit: perUser, duration: TOKEN_WINDOW });
  }

  get windows(): SharedWindow[] {
    return [this.#client, this.#user].filter((w) => w !== undefined);
  }

  /** Every grant's handler, built in or registered, runs after this check (see buildProvider's `wrapGrant`). */
  readonly wrapGrant: GrantWrapper = (grantType, handler) => async (ctx) => {
    this.#check(ctx, grantType);
    return handler(ctx);
  };

  /**
   * Around the provider: a token request the provider refused after authenticating the client but before any
   * grant ran (repeated parameters, an unknown grant type) still counts against that client. Whatever path
   * spelling reached it, the provider's route says what the request was.
   */
  readonly middleware = async (ctx: Context, next: Next): Promise<void> => {
    await next();
    const oidc = (ctx as unknown as KoaContextWithOIDC).oidc;
    if (!this.#client || oidc?.route !== 'token' || ctx.state.tokenRequestCounted || !oidc.client || ctx.status === 401) return;
    this.#client.add(keyOf(oidc.client, ctx.ip));
  };

  #check(ctx: KoaContextWithOIDC, grantType: string): void {
    ctx.state.tokenRequestCounted = true;
    const client = ctx.oidc.client;
    if (!client) return;
    const key = keyOf(client, ctx.ip);
    if (this.#client) {
      const t = this.#client.take(key);
      if (!t.allowed) this.#refuse(ctx, this.#client, key.startsWith('client:') ? 'token_client' : 'token_public', key, t, describe(key.startsWith('client:') ? client.clientId : undefined, seconds(t.msLeft)));
    }
    if (this.#user && grantType === TOKEN_EXCHANGE) {
      const sub = claimedSubject(ctx.oidc.params as Record<string, unknown> | undefined);
      if (sub === undefined) return;
      const userKey = `${key}:${sub}`;
      const t = this.#user.take(userKey);
      if (!t.allowed) {
        this.#refuse(ctx, this.#user, 'token_user', userKey, t, `rate limit exceeded for this user at client ${client.clientId}; retry after ${seconds(t.msLeft)} s`);
      }
    }
  }

  #refuse(ctx: KoaContextWithOIDC, window: SharedWindow, limiter: TokenLimit, key: string, t: WindowCount, description: string): never {
    this.#observe?.observeRefusal(limiter);
    const retryAfter = seconds(t.msLeft);
    // once per window and key (later refusals find it over already)
    if (t.count === window.limit + 1) this.#log.warn({ event: 'token.rate_limited', limiter, key, limit: window.limit, retryAfter }, 'token endpoint rate limit reached');
    const per = limiter === 'token_user' ? 'token exchanges per minute for this user' : 'token requests per minute';
    const explanation = `${key} is over its limit of ${window.limit} ${per}; told to retry after ${retryAfter} s`;
    ctx.state.throttled = { limit: 'token', retryAfter, description, explanation } satisfies Throttled;
    ctx.set('Retry-After', String(retryAfter));
    throw new OAuthError('temporarily_unavailable', description, 429);
  }
}

/** An authenticated client's own bucket; a public client's requests count per IP. */
const keyOf = (client: { clientId: string; clientAuthMethod?: string | undefined }, ip: string): string =>
  bounded(client.clientAuthMethod === 'none' ? `public:${ip}` : `client:${client.clientId}`);

function describe(clientId: string | undefined, retryAfter: number): string {
  return clientId === undefined
    ? `rate limit exceeded for requests without client authentication from this address; retry after ${retryAfter} s`
    : `rate limit exceeded for client ${clientId}; retry after ${retryAfter} s`;
}

// ---------------------------------------------------------------------------------------------------------
// Client authentication

const CLIENT_AUTH_WINDOW = 60;

/**
 * Failed client authentications per minute, per IP and per client id, on every endpoint that checks a client
 * secret: the token endpoint (under any spelling of its path: the provider's route decides, not the URL),
 * introspection, revocation and the client diagnostics view. A failure is a wrong secret, a secret for an
 * unknown client id, or a secret for a client that authenticates otherwise. Over either limit an attempt is
 * refused before its secret is looked at, so guessing costs the guesser a 429 and the IdP no scrypt. A correct
 * secret is refused too while a limit holds: letting it through would tell a guesser when it guessed right.
 *
 * The per-client limit lets anyone who knows a client id hold that client off for a minute at a time by
 * failing on purpose; it is set well above the per-IP one so that takes many addresses (README "Throttling").
 * Counted like the token limits: in memory, reconciled through the database every second (window.ts).
 */
export class ClientAuthThrottle implements ClientAuthGate {
  readonly #buckets: { by: 'ip' | 'client'; window: SharedWindow }[] = [];
  readonly #observe: RateLimitObserver | undefined;

  constructor(s: ThrottleSettings, observe?: RateLimitObserver) {
    this.#observe = observe;
    if (s.clientAuthIpFailures > 0) {
      this.#buckets.push({ by: 'ip', window: new SharedWindow({ prefix: 'client_auth_ip', limit: s.clientAuthIpFailures, duration: CLIENT_AUTH_WINDOW }) });
    }
    if (s.clientAuthClientFailures > 0) {
      this.#buckets.push({ by: 'client', window: new SharedWindow({ prefix: 'client_auth_client', limit: s.clientAuthClientFailures, duration: CLIENT_AUTH_WINDOW }) });
    }
  }

  get windows(): SharedWindow[] {
    return this.#buckets.map((b) => b.window);
  }

  async admit(ip: string, clientId: string): Promise<ClientAuthVerdict> {
    for (const { by, window } of this.#buckets) {
      const key = bounded(by === 'ip' ? ip : clientId);
      const seen = window.peek(key);
      if (seen.count >= window.limit) {
        const retryAfter = seconds(seen.msLeft);
        this.#observe?.observeRefusal(by === 'ip' ? 'client_auth_ip' : 'client_auth_client');
        return {
          allowed: false, by, retryAfter,
          description: `too many failed client authentications ${by === 'ip' ? 'from this address' : `for client ${clientId}`}; retry after ${retryAfter} s`,
          explanation: `${by}:${key} is over its limit of ${window.limit} failed client authentications per minute; told to retry after ${retryAfter} s`,
        };
      }
    }
    return { allowed: true };
  }

  async failed(ip: string, clientId: string): Promise<void> {
    for (const { by, window } of this.#buckets) window.add(bounded(by === 'ip' ? ip : clientId));
  }
}

// ---------------------------------------------------------------------------------------------------------

/** How often each node reconciles its counters with the database: the bound across nodes (window.ts). */
export const SYNC_MS = 1000;

export interface RateLimits {
  login: LoginThrottle;
  token: TokenThrottle;
  clientAuth: ClientAuthThrottle;
  /** reconciles the in-memory counters with the database now (also done every SYNC_MS once started) */
  sync(): Promise<void>;
  /** stops the periodic reconciliation, after a last one */
  close(): Promise<void>;
}

export function createRateLimits(database: Database, settings: ThrottleSettings, log: Logger, observe?: RateLimitObserver): RateLimits {
  const limiter = limiterFactory(database);
  const token = new TokenThrottle(settings.tokenRateLimit, settings.tokenUserRateLimit, log, observe);
  const clientAuth = new ClientAuthThrottle(settings, observe);
  const windows = [...token.windows, ...clientAuth.windows];
  let running: Promise<void> | undefined;
  const sync = () => running ??= syncWindows(database.db, windows)
    .catch((err: unknown) => log.error({ err }, 'rate limit counters could not be reconciled with the database; counting on this node alone until they can'))
    .finally(() => { running = undefined; });
  const timer = windows.length ? setInterval(() => void sync(), SYNC_MS) : undefined;
  timer?.unref();
  return {
    login: new LoginThrottle(limiter, settings, observe),
    token,
    clientAuth,
    sync,
    close: async () => {
      clearInterval(timer);
      await running;
      await sync();
    },
  };
}
