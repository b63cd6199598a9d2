import { uuidv7 } from './audit/index.ts';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import cluster from 'node:cluster';
import type { Registry } from 'prom-client';
import Koa, { type Context, type Next } from 'koa';
import { pino, type Logger } from 'pino';
import { sql } from 'kysely';
import { applyRetention } from './audit/retention.ts';
import { seedIfEmpty } from '../seed/index.ts';
import { ADMIN_API_PREFIX, ADMIN_UI_PREFIX, createAdmin } from './admin/index.ts';
import { ConfigError, loadConfig, productionIssuerProblem, workerCount, type Config } from './config/index.ts';
import { clientViewRoutes } from './conformance/client-view.ts';
import { purgeExpiredProofs } from './db/dpop-proofs.ts';
import { auditFileOf, exclusively, migrateToLatest, now, openDatabase, type Database } from './db/index.ts';
import { demoParties, type Demo } from './demo/index.ts';
import { DEMO_AS_CLIENT } from './demo/seeded.ts';
import { discoveryMetadata, dpopNonces, exchangeRefusals, registerTokenExchange } from './exchange/index.ts';
import { deleteExpiredPayloads } from './oidc/adapter.ts';
import { clientAuthErrors } from './oidc/client-auth.ts';
import { authorizationServerMetadata } from './oidc/discovery.ts';
import { ProviderHost } from './oidc/host.ts';
import { interactionRoutes } from './oidc/interactions.ts';
import { ensureSigningKeys, purgeExpiredKeys } from './oidc/keys.ts';
import { createRateLimits, purgeExpiredRateLimits, type RateLimits } from './throttle/index.ts';
import { classify } from './web/errors.ts';
import { pinOrigin } from './web/origin.ts';
import { Readiness } from './web/readiness.ts';
import { createMetrics } from './metrics/index.ts';
import { clusterMetrics, primarySessions, reportReady, runPrimary, workerIndex, type SessionStore } from './cluster/index.ts';
import type { PlaygroundState } from './playground/flow.ts';
import { playground } from './playground/index.ts';
import { MAX_SESSIONS, SESSION_TTL_MS } from './playground/session.ts';
import type { UrlPolicy } from './admin/fields.ts';
import { securityHeaders } from './web/security.ts';
import { storedCookieKeys } from './web/settings.ts';
import { loadViews } from './web/views.ts';
import { VIEWS_DIR } from './package-root.ts';

const ASSETS = join(VIEWS_DIR, 'assets');
const CLEANUP_MS = 10 * 60_000;
const SHUTDOWN_GRACE_MS = 10_000;

export interface Idjag {
  config: Config;
  issuer: string;
  url: string;
  server: Server;
  database: Database;
  host: ProviderHost;
  log: Logger;
  seeded: boolean;
  /** the demo Resource AS and MCP server, unless started with --no-demo */
  demo: Demo | undefined;
  /** the throttles; `limits.sync()` reconciles their in-memory counters with the database now */
  limits: RateLimits;
  close(): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  /** as one worker of several (src/cluster): what they share through the primary */
  worker?: WorkerServices;
}

export interface WorkerServices {
  /** this worker's index: the first (0) runs the periodic cleanup for all */
  index: number;
  sessions: SessionStore<PlaygroundState>;
  metrics: (registry: Registry) => () => Promise<string>;
}

/** What this process shares through the cluster's primary, when it is a worker; undefined: a single process. */
export function workerServices(): WorkerServices | undefined {
  const index = workerIndex();
  return index === undefined ? undefined : { index, sessions: primarySessions(), metrics: clusterMetrics };
}

/** The playground's bounds, which the primary keeps for all workers as a single process keeps them for itself. */
export const PLAYGROUND_SESSIONS = { max: MAX_SESSIONS, ttlMs: SESSION_TTL_MS };

/**
 * Composition: open and migrate the database, make sure keys exist, seed an empty database, build the
 * provider and the koa app around it, and listen. The socket is bound before the provider is built so the
 * issuer can name the port actually bound; until the app is ready, requests are answered 503 (Readiness).
 */
export async function startIdjag(config: Config, options: StartOptions = {}): Promise<Idjag> {
  // before anything listens: a production IdP at a plain-http (or derived) issuer would answer every client wrongly
  const refused = productionIssuerProblem(config);
  if (refused) throw new ConfigError(refused);
  const log = options.log ?? pino({ level: config.logLevel, redact: ['req.headers.authorization', 'req.headers.cookie'] });
  const readiness = new Readiness();
  const server = createServer(readiness.listener);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const local = ['0.0.0.0', '::', 'localhost'].includes(config.host) ? 'localhost' : config.host;
  const bound = `${local.includes(':') ? `[${local}]` : local}:${port}`;
  const issuer = config.issuer ?? `http://${bound}`;
  // where this process reaches itself: the address it listens on, whatever public issuer it serves under
  const url = local === 'localhost' ? `http://127.0.0.1:${port}` : `http://${bound}`;
  // new Resource AS issuers and MCP server resources: https only in production (the MCP extension)
  const urls: UrlPolicy = { httpsOnly: config.production };

  const database = openDatabase(config.database);
  const { db } = database;
  try {
    // one node at a time, when several start together on one PostgreSQL database
    const { seeded, cookieKeys } = await exclusively(database, async () => {
      const { applied } = await migrateToLatest(db);
      if (applied.length) log.info({ applied }, 'migrations applied');
      const createdKeys = await ensureSigningKeys(db);
      if (createdKeys.length) log.info({ kids: createdKeys }, 'signing keys generated');
      const seeded = config.seedOnEmpty ? await seedIfEmpty(db, issuer, config.seedFile, urls) : false;
      if (seeded) log.info({ seed: config.seedFile ?? 'seed/seed.json' }, 'empty database seeded');
      else if (config.seedFile) log.warn({ seed: config.seedFile }, 'the database is not empty: the seed document was not applied');
      return { seeded, cookieKeys: config.cookieKeys ?? (await storedCookieKeys(db)) };
    });
    if (config.production) await warnInsecureCatalog(db, log);
    const render = loadViews();
    const secure = issuer.startsWith('https:');

    // Prometheus metrics at /metrics; the parts below report to them through their `observe` ports.
    const metrics = createMetrics({ database, token: config.metricsToken, aggregate: options.worker?.metrics });
    // Sign-in, token endpoint and client authentication throttling, shared through the database (see README "Throttling").
    const limits = createRateLimits(database, config, log, metrics.rateLimits);
    const host = await ProviderHost.create({
      wrapGrant: limits.token.wrapGrant,
      clientAuth: limits.clientAuth,
      db, issuer, cookieKeys, render, log, secure,
      discovery: discoveryMetadata,
      extend: (provider, keys) => registerTokenExchange(provider, {
        db, issuer, tenant: config.tenant, log, errors: config.errors, keys: () => keys, observe: metrics.exchange,
        // the nonces' key derives from the cookie keys, which every node shares, so any node accepts any node's nonce
        dpopNonces: config.dpopNonce ? dpopNonces(cookieKeys[0]!) : undefined,
      }),
    });
    const app = new Koa({ keys: cookieKeys, proxy: secure && config.production });
    app.silent = true;
    pinOrigin(app, issuer);
    app.use(drainUnreadBody);
    app.use(requestLog(log));
    app.use(lastResort(log));
    app.use(securityHeaders({ https: secure }));
    app.use(async (ctx, next) => {
      if (ctx.path === '/healthz' && ctx.method === 'GET') return health(ctx, database);
      if (ctx.path === '/readyz' && ctx.method === 'GET') return ready(ctx, database, host, readiness);
      if (ctx.path.startsWith('/assets/') && ctx.method === 'GET') return asset(ctx);
      return next();
    });
    app.use(metrics.middleware);
    // Steps 3 and 4 of the flow, before the provider so its catch-all never sees their paths.
    const demo = config.demo ? demoParties({ db, issuer, url, log }) : undefined;
    if (demo) app.use(demo.middleware);
    // The whole flow in the browser, against the demo parties: development only.
    if (demo && !config.production) app.use(playground({ db, issuer, url, render, log, demo, sessions: options.worker?.sessions }).middleware);
    const clientView = clientViewRoutes({ db, render, throttle: limits.clientAuth });
    app.use(clientView.routes()).use(clientView.allowedMethods());
    const interactions = interactionRoutes({ db, render, log, provider: () => host.provider, throttle: limits.login, observe: metrics.signIns });
    app.use(interactions.routes()).use(interactions.allowedMethods());
    // The admin JSON API (bearer tokens, /admin/api) and web UI (admins signed in here, /admin), each with its
    // own body parser on its own routes only.
    app.use(createAdmin({
      db, log, issuer, tenant: config.tenant, urls, url, render, provider: () => host.provider, reloadKeys: () => host.refreshKeys(), demoAsClientId: demo ? DEMO_AS_CLIENT.clientId : undefined,
      impact: { days: config.impactDays, maxRows: config.impactMaxRows },
    }).middleware);
    app.use(limits.token.middleware);
    app.use(authorizationServerMetadata);
    app.use(exchangeRefusals({ db, log, errors: config.errors, observe: metrics.exchange }));
    app.use(clientAuthErrors);
    app.use(host.middleware);
    readiness.serve(app.callback());

    const timers = [
      setInterval(() => host.refreshKeys().then((changed) => changed && log.info({ keys: host.keys.fingerprint }, 'signing keys reloaded'),
        (err) => log.error({ err }, 'key refresh failed')), config.keyRefreshSeconds * 1000),
    ];
    // one worker cleans up for all (the others would only repeat its deletes)
    const cleans = (options.worker?.index ?? 0) === 0;
    if (cleans) timers.push(setInterval(() => cleanup(database, config, log), CLEANUP_MS));
    timers.forEach((t) => t.unref());
    if (cleans) await cleanup(database, config, log);

    let closing: Promise<void> | undefined;
    const close = () => closing ??= (async () => {
      // Not ready first, while still serving: a load balancer polling /readyz stops sending before we stop accepting.
      readiness.drain();
      if (config.drainSeconds > 0) await sleep(config.drainSeconds * 1000);
      timers.forEach(clearInterval);
      // Stop accepting, let in-flight requests finish, then cut whatever is still open after the grace period.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
      await closed;
      clearTimeout(force);
      await limits.close();
      await demo?.close();
      await database.close();
    })();

    return { config, issuer, url, server, database, host, log, seeded, demo, limits, close };
  } catch (err) {
    server.close();
    await database.close();
    throw err;
  }
}

/**
 * Resource ASes and MCP servers stored before production mode required https (or added in development) keep
 * working; the admin refuses new ones. Say which, so an operator can replace them.
 */
async function warnInsecureCatalog(db: Database['db'], log: Logger): Promise<void> {
  const https = (u: string) => URL.canParse(u) && new URL(u).protocol === 'https:';
  const servers = (await db.selectFrom('resource_servers').select('issuer').execute()).map((r) => r.issuer).filter((u) => !https(u));
  const resources = (await db.selectFrom('mcp_servers').select('resource').execute()).map((r) => r.resource).filter((u) => !https(u));
  if (servers.length || resources.length) {
    log.warn({ resourceServers: servers, mcpServers: resources }, 'production mode: these Resource AS issuers and MCP server resources are not https (the MCP extension requires https); replace them');
  }
}

function requestLog(log: Logger) {
  return async (ctx: Context, next: Next) => {
    const started = performance.now();
    const incoming = ctx.get('x-request-id');
    const theirs = /^[A-Za-z0-9._-]{1,100}$/.test(incoming);
    const id = theirs ? incoming : uuidv7();
    ctx.state.requestId = id;
    // an id idjag generated also names the request's audit row (and an ID-JAG it issues); a client's does not
    if (!theirs) ctx.state.auditId = id;
    ctx.set('X-Request-Id', id);
    try {
      await next();
    } finally {
      // The path only: query strings can carry codes and tokens.
      log.info({ reqId: id, method: ctx.method, path: ctx.path, status: ctx.respond === false ? ctx.res.statusCode : ctx.status, ms: Math.round(performance.now() - started) }, 'request');
    }
  };
}

/**
 * A body parser that stops at its size limit (the provider's 56 KiB, the forms', the admin API's) leaves the
 * rest of the body unread, and Node then neither reads it nor closes the connection: the client's next request
 * on that keep-alive connection would hang until the socket timed out. Read and discard what is left, as Node
 * does for a body nobody started reading.
 */
async function drainUnreadBody(ctx: Context, next: Next) {
  try {
    await next();
  } finally {
    if (!ctx.req.complete) ctx.req.resume();
  }
}

/** Readiness: this node takes traffic (not starting, not draining), its database answers and it has keys to sign with. */
async function ready(ctx: Context, database: Database, host: ProviderHost, readiness: Readiness) {
  ctx.set('Cache-Control', 'no-store');
  const reachable = await sql`select 1`.execute(database.db).then(() => 'ok', () => 'unreachable');
  const keys = (['id_token', 'id_jag'] as const).every((purpose) => host.keys.keys.some((k) => k.purpose === purpose && k.active)) ? 'ok' : 'missing';
  const ok = readiness.phase === 'ready' && reachable === 'ok' && keys === 'ok';
  ctx.status = ok ? 200 : 503;
  ctx.body = { status: ok ? 'ready' : readiness.phase === 'ready' ? 'unavailable' : readiness.phase, database: reachable, keys };
}

/** Whatever escapes every other handler is classified like everywhere else (src/web/errors.ts); a fault is logged, no stack trace on the wire. */
function lastResort(log: Logger) {
  return async (ctx: Context, next: Next) => {
    try {
      await next();
    } catch (err) {
      const c = classify(err);
      if (c.fault) log.error({ err, reqId: ctx.state.requestId }, 'unhandled error');
      ctx.status = c.status;
      ctx.set(c.headers);
      ctx.body = { error: c.code, error_description: c.message };
    }
  };
}

async function health(ctx: Context, database: Database) {
  ctx.set('Cache-Control', 'no-store');
  try {
    await sql`select 1`.execute(database.db);
    ctx.body = { status: 'ok', database: 'ok' };
  } catch {
    ctx.status = 503;
    ctx.body = { status: 'unavailable', database: 'unreachable' };
  }
}

const ASSET_TYPES: Record<string, string> = { css: 'text/css; charset=utf-8', js: 'text/javascript; charset=utf-8', svg: 'image/svg+xml' };
function asset(ctx: Context) {
  const name = ctx.path.slice('/assets/'.length);
  const type = ASSET_TYPES[name.split('.').pop() ?? ''];
  if (!/^[a-z0-9-]+\.[a-z]+$/.test(name) || !type) return void (ctx.status = 404);
  try {
    ctx.body = readFileSync(join(ASSETS, name));
    ctx.type = type;
    ctx.set('Cache-Control', 'public, max-age=3600');
  } catch {
    ctx.status = 404;
  }
}

async function cleanup(database: Database, config: Config, log: Logger) {
  try {
    const payloads = await deleteExpiredPayloads(database.db);
    const keys = await purgeExpiredKeys(database.db);
    const rateLimits = await purgeExpiredRateLimits(database.db);
    const dpopProofs = await purgeExpiredProofs(database.db, now());
    if (payloads || keys || rateLimits || dpopProofs) log.debug({ payloads, keys, rateLimits, dpopProofs }, 'expired rows deleted');
    const audit = await applyRetention(database.db, { days: config.auditRetentionDays, archiveDir: config.auditArchiveDir });
    if (audit.deleted || audit.logins.deleted) log.info({ ...audit, retentionDays: config.auditRetentionDays }, 'decisions and sign-in attempts past retention removed');
  } catch (err) {
    log.error({ err }, 'cleanup failed');
  }
}

function banner(idjag: Idjag, workers: number): string {
  return [
    '',
    `idjag is running at ${idjag.issuer}`,
    // behind a load balancer the issuer is the balancer's: this is where this node itself listens
    `  listening   ${idjag.config.host.includes(':') ? `[${idjag.config.host}]` : idjag.config.host}:${(idjag.server.address() as AddressInfo).port}`,
    `  discovery   ${idjag.issuer}/.well-known/openid-configuration`,
    `  jwks        ${idjag.issuer}/jwks`,
    `  health      ${idjag.issuer}/healthz  (liveness)   ${idjag.issuer}/readyz  (readiness)`,
    `  metrics     ${idjag.issuer}/metrics${idjag.config.metricsToken ? '  (Bearer: the metrics token)' : ''}`,
    `  database    ${idjag.database.location}${idjag.database.dialect === 'sqlite' && idjag.database.location !== ':memory:' ? `  (audit log: ${auditFileOf(idjag.database.location)})` : ''}`,
    `  workers     ${workers}${workers > 1 ? ' processes on one port (node:cluster; --workers)' : ' process (--workers)'}`,
    `  admin ui    ${idjag.issuer}${ADMIN_UI_PREFIX}  (sign in as a member of the admins group)`,
    `  admin api   ${idjag.issuer}${ADMIN_API_PREFIX}  (Bearer: a client_credentials token with scope admin)`,
    ...(idjag.demo ? [
      `  demo AS     ${idjag.demo.asIssuer}  (Resource AS, JWT-bearer grant with an ID-JAG)`,
      `  demo MCP    ${idjag.demo.mcpResource}  (todo list; try it with npm run demo:client)`,
      ...(idjag.config.production ? [] : [`  playground  ${idjag.issuer}/playground  (the whole flow in the browser)`]),
    ] : []),
    ...(idjag.config.seedFile ? [`  seed        ${idjag.config.seedFile}${idjag.seeded ? '' : '  (not applied: the database was not empty)'}`] : []),
    ...(idjag.config.production || idjag.config.seedFile ? [] : [
      '  seeded logins (development data, see seed/seed.json):',
      '    alice / alice   (group engineering)',
      '    bob   / bob     (group sales)',
      '    admin / admin   (group admins)',
      '    client demo-agent / demo-agent-secret  (confidential, first-party, may use token exchange)',
      '    client idjag-admin-cli / idjag-admin-cli-secret  (client_credentials with scope admin: the admin API)',
    ]),
    '',
  ].join('\n');
}

/**
 * `npm start` and `npx idjag`: settings from flags and environment, start, print where, stop on a signal. With
 * several workers (`--workers`, one per core by default) this process is the cluster's primary: it forks them,
 * prints the first one's banner once all serve, and stops them on a signal (src/cluster).
 */
export async function main() {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : err);
    process.exit(2);
  }
  const workers = workerCount(config);
  if (workers > 1 && cluster.isPrimary) {
    const log = pino({ level: config.logLevel });
    const code = await runPrimary({
      workers, log, sessions: PLAYGROUND_SESSIONS,
      print: (text) => process.stdout.write(text),
    });
    process.exit(code);
  }
  const worker = workerServices();
  const index = worker?.index;
  const idjag = await startIdjag(config, { worker });
  const text = banner(idjag, workers);
  if (index === undefined) process.stdout.write(text);
  else reportReady(text);
  let stopping = false;
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    idjag.log.info({ signal: why, ...(index === undefined ? {} : { worker: index }) }, 'shutting down');
    idjag.close().then(() => process.exit(0), (err) => {
      idjag.log.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // a worker whose primary is gone (killed) has no one to take connections from: it finishes and stops
  if (index !== undefined) process.on('disconnect', () => stop('primary gone'));
}

if (import.meta.main) {
  main().catch((err) => {
    console.error('idjag failed to start:', err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
