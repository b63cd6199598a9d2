import { existsSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';

/**
 * Settings come from CLI flags first, then environment variables, then defaults. They are validated once, at
 * start, so a typo in a port or an issuer stops the process with a message instead of a half-working IdP.
 */
const Settings = z.object({
  port: z.coerce.number().int().min(0).max(65535),
  host: z.string().min(1),
  /** unset: `http://localhost:{port}` (or the host, when one is set), with the port actually bound (so port 0 works) */
  issuer: z.url({ protocol: /^https?$/ }).refine((u) => !u.endsWith('/'), 'must not end with a slash')
    .refine((u) => !/[?#]/.test(u), 'must not contain a query or fragment').optional(),
  /** a SQLite file path (the default, one machine) or a postgres:// URL (several nodes on one database) */
  database: z.string().min(1).refine((d) => !/^postgres(ql)?:/i.test(d) || (URL.canParse(d) && /^postgres(ql)?:\/\/[^/]/i.test(d)),
    'a PostgreSQL database is a URL such as postgres://user:password@host:5432/idjag'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  cookieKeys: z.array(z.string().min(16, 'each cookie key needs at least 16 characters')).optional(),
  production: z.boolean(),
  seedOnEmpty: z.boolean(),
  /** the seed document an empty database gets instead of seed/seed.json (an absolute path) */
  seedFile: z.string().min(1).transform((f) => resolve(f)).superRefine((f, ctx) => {
    if (!existsSync(f) || !statSync(f).isFile()) ctx.addIssue({ code: 'custom', message: `no such file: ${f}` });
  }).optional(),
  /** error_description detail at the token exchange: verbose (default in development) or minimal (default in production) */
  errors: z.enum(['verbose', 'minimal']),
  /** how often every node re-reads the signing keys, so a rotation made anywhere is used everywhere */
  keyRefreshSeconds: z.coerce.number().int().min(1).max(3600),
  /** audit retention: decisions older than this many days leave the log (0: keep everything) */
  auditRetentionDays: z.coerce.number().int().min(0).max(36500),
  /** where decisions leaving the log are archived first (JSON Lines, one file per day); unset: deleted only */
  auditArchiveDir: z.string().min(1).optional(),
  /** serve the demo Resource AS and MCP server under the issuer (`/demo/as`, `/demo/mcp`) */
  demo: z.boolean(),
  /** sign-in throttling: consecutive failed attempts per account (case-folded username) before a block; 0: off */
  loginAccountFailures: z.coerce.number().int().min(0).max(1000),
  /** the first block, in seconds; each further block in the account's run doubles it */
  loginAccountBlock: z.coerce.number().int().min(1).max(86400),
  /** the longest block, in seconds */
  loginAccountBlockMax: z.coerce.number().int().min(1).max(86400),
  /** unsuccessful sign-in attempts per client IP per hour before the IP is blocked for an hour; 0: off */
  loginIpFailures: z.coerce.number().int().min(0).max(1_000_000),
  /**
   * token endpoint requests per minute per authenticated client (and per IP without client authentication): a
   * ceiling far above one enterprise's traffic, since one client id serves all its users; 0: off
   */
  tokenRateLimit: z.coerce.number().int().min(0).max(100_000_000),
  /** token exchanges per minute per client and user (the subject token's sub); 0: off */
  tokenUserRateLimit: z.coerce.number().int().min(0).max(10_000_000),
  /** on SIGTERM, seconds between reporting not-ready (/readyz) and closing the listener: time for a load balancer to notice */
  drainSeconds: z.coerce.number().int().min(0).max(300),
  /** failed client authentications per minute from one IP, on every endpoint that checks a client secret; 0: off */
  clientAuthIpFailures: z.coerce.number().int().min(0).max(1_000_000),
  /** failed client authentications per minute naming one client id, from anywhere; 0: off */
  clientAuthClientFailures: z.coerce.number().int().min(0).max(1_000_000),
  /** a policy change's impact replays the recorded decisions of this many days */
  impactDays: z.coerce.number().int().min(1).max(366),
  /** ... and at most this many of them (the newest) */
  impactMaxRows: z.coerce.number().int().min(100).max(1_000_000),
  /** the token exchange hands out DPoP nonces and requires a recent one in every DPoP proof (RFC 9449 §8) */
  dpopNonce: z.boolean(),
  /** when set, GET /metrics requires `Authorization: Bearer <this>`; unset, /metrics is open */
  metricsToken: z.string().min(16, 'the metrics token needs at least 16 characters').max(512)
    .regex(/^[\x21-\x7e]+$/, 'the metrics token must be printable ASCII without spaces').optional(),
  /** this IdP's tenant identifier: every ID-JAG carries it as `tenant` (draft §3); unset, none does */
  tenant: z.string().trim().min(1).max(255).regex(/^[\x21-\x7e]+$/, 'the tenant is printable ASCII without spaces').optional(),
  /** processes serving requests (node:cluster), on one port and one database; `auto`: one per core, up to 4 */
  workers: z.union([z.literal('auto'), z.coerce.number().int().min(1).max(64)]),
}).superRefine((c, ctx) => {
  if (c.database === ':memory:' && typeof c.workers === 'number' && c.workers > 1) {
    ctx.addIssue({ code: 'custom', path: ['workers'], message: 'an in-memory database (:memory:) belongs to one process: use --workers 1 or a database file' });
  }
  const problem = productionIssuerProblem(c);
  // an unset issuer is derived from the port at start (startIdjag says so then): commands such as migrate need none
  if (problem && c.issuer !== undefined) ctx.addIssue({ code: 'custom', path: ['issuer'], message: problem });
});

export type Config = z.infer<typeof Settings>;

/** Workers when none are asked for: one per core, up to four (past that SQLite's single writer is the limit). */
export const AUTO_WORKERS_MAX = 4;
const autoWorkers = (): number => Math.min(availableParallelism(), AUTO_WORKERS_MAX);

/** How many processes serve: `auto` is one per core up to AUTO_WORKERS_MAX, and one for an in-memory database. */
export const workerCount = (c: Pick<Config, 'workers' | 'database'>): number =>
  (c.workers !== 'auto' ? c.workers : c.database === ':memory:' ? 1 : autoWorkers());

/**
 * In production the issuer must be https: every endpoint URL clients use derives from it, and the MCP
 * extension requires https for the token, metadata and key endpoints. (Development also takes http, for
 * loopback addresses.) Undefined when the issuer is acceptable.
 */
export function productionIssuerProblem(c: Pick<Config, 'production' | 'issuer'>): string | undefined {
  if (!c.production) return undefined;
  if (c.issuer === undefined) return 'in production mode the issuer must be set (ISSUER or --issuer) to the https URL clients reach idjag at';
  if (!URL.canParse(c.issuer) || new URL(c.issuer).protocol !== 'https:') return `in production mode the issuer must be an https URL (got ${c.issuer}): the MCP extension requires https for the token, metadata and key endpoints; plain http is for development only`;
  return undefined;
}

const flags = {
  port: { type: 'string' },
  host: { type: 'string' },
  issuer: { type: 'string' },
  database: { type: 'string' },
  'log-level': { type: 'string' },
  'cookie-keys': { type: 'string' },
  production: { type: 'boolean' },
  'no-seed': { type: 'boolean' },
  seed: { type: 'string' },
  'no-demo': { type: 'boolean' },
  errors: { type: 'string' },
  'key-refresh': { type: 'string' },
  'audit-retention-days': { type: 'string' },
  'audit-archive-dir': { type: 'string' },
  'login-account-failures': { type: 'string' },
  'login-account-block': { type: 'string' },
  'login-account-block-max': { type: 'string' },
  'login-ip-failures': { type: 'string' },
  'token-rate-limit': { type: 'string' },
  'token-user-rate-limit': { type: 'string' },
  workers: { type: 'string' },
  'drain-seconds': { type: 'string' },
  'client-auth-ip-failures': { type: 'string' },
  'client-auth-client-failures': { type: 'string' },
  'metrics-token': { type: 'string' },
  'impact-days': { type: 'string' },
  'impact-max-rows': { type: 'string' },
  tenant: { type: 'string' },
  'dpop-nonce': { type: 'boolean' },
} as const;

export class ConfigError extends Error {}

/** The arguments that are not settings (a command's own, such as `rotate-keys id_jag`), in order. */
export function positionalArgs(argv: string[]): string[] {
  return parseArgs({ args: argv, options: flags, strict: true, allowPositionals: true }).positionals;
}

export function loadConfig(
  argv: string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
  overrides: Partial<Config> = {},
): Config {
  const { values } = parseArgs({ args: argv, options: flags, strict: true, allowPositionals: true });
  const port = values.port ?? env.PORT ?? '3000';
  const cookieKeys = values['cookie-keys'] ?? env.COOKIE_KEYS;
  const raw = {
    port,
    host: values.host ?? env.HOST ?? '0.0.0.0',
    issuer: values.issuer ?? env.ISSUER,
    // DATABASE_URL (the usual name on platforms that provision PostgreSQL) wins over DATABASE
    database: values.database ?? (env.DATABASE_URL || undefined) ?? env.DATABASE ?? './data/idjag.db',
    logLevel: values['log-level'] ?? env.LOG_LEVEL ?? 'info',
    cookieKeys: cookieKeys ? cookieKeys.split(',').map((k) => k.trim()).filter(Boolean) : undefined,
    production: values.production ?? env.NODE_ENV === 'production',
    seedOnEmpty: !(values['no-seed'] ?? env.IDJAG_NO_SEED === '1'),
    seedFile: values.seed ?? (env.IDJAG_SEED_FILE || undefined),
    demo: !(values['no-demo'] ?? env.IDJAG_NO_DEMO === '1'),
    keyRefreshSeconds: values['key-refresh'] ?? env.IDJAG_KEY_REFRESH_SECONDS ?? 30,
    auditRetentionDays: values['audit-retention-days'] ?? env.IDJAG_AUDIT_RETENTION_DAYS ?? '90',
    auditArchiveDir: values['audit-archive-dir'] ?? (env.IDJAG_AUDIT_ARCHIVE_DIR || undefined),
    loginAccountFailures: values['login-account-failures'] ?? env.IDJAG_LOGIN_ACCOUNT_FAILURES ?? '5',
    loginAccountBlock: values['login-account-block'] ?? env.IDJAG_LOGIN_ACCOUNT_BLOCK ?? '30',
    loginAccountBlockMax: values['login-account-block-max'] ?? env.IDJAG_LOGIN_ACCOUNT_BLOCK_MAX ?? '900',
    loginIpFailures: values['login-ip-failures'] ?? env.IDJAG_LOGIN_IP_FAILURES ?? '100',
    tokenRateLimit: values['token-rate-limit'] ?? env.IDJAG_TOKEN_RATE_LIMIT ?? '600000',
    tokenUserRateLimit: values['token-user-rate-limit'] ?? env.IDJAG_TOKEN_USER_RATE_LIMIT ?? '300',
    workers: values.workers ?? env.IDJAG_WORKERS ?? 'auto',
    drainSeconds: values['drain-seconds'] ?? env.IDJAG_DRAIN_SECONDS ?? ((values.production ?? env.NODE_ENV === 'production') ? '5' : '0'),
    clientAuthIpFailures: values['client-auth-ip-failures'] ?? env.IDJAG_CLIENT_AUTH_IP_FAILURES ?? '60',
    clientAuthClientFailures: values['client-auth-client-failures'] ?? env.IDJAG_CLIENT_AUTH_CLIENT_FAILURES ?? '300',
    metricsToken: values['metrics-token'] ?? (env.IDJAG_METRICS_TOKEN || undefined),
    impactDays: values['impact-days'] ?? env.IDJAG_IMPACT_DAYS ?? '7',
    impactMaxRows: values['impact-max-rows'] ?? env.IDJAG_IMPACT_MAX_ROWS ?? '10000',
    tenant: values.tenant ?? (env.IDJAG_TENANT || undefined),
    dpopNonce: values['dpop-nonce'] ?? env.IDJAG_DPOP_NONCE === '1',
    errors: values.errors ?? env.IDJAG_ERRORS ?? ((values.production ?? env.NODE_ENV === 'production') ? 'minimal' : 'verbose'),
    ...overrides,
  };
  const parsed = Settings.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}
