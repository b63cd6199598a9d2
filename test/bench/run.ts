/**
 * `npm run bench`: throughput and latency of the token exchange, side by side with the provider's plain
 * client_credentials grant (the stack's baseline) and with the true floor (true-floor.ts: the work an exchange
 * cannot avoid, written plainly with no project code), at 10 and at 100,000 policy rules. The server runs in
 * a child process; load comes from this one (autocannon). Table on stdout, JSON in test-output/bench.json.
 * The exchange's own code run in-process without HTTP (floor.ts) gives the per-stage breakdown; it is not a
 * floor (a floor made of the code under test cannot show that the code is slow).
 *
 * Order: true floor and in-process exchange; server warm-up; exchange @1; exchange @32; client_credentials @32;
 * 100,000 rules inserted into the live database; exchange @32; back to 10 rules; exchange @32; both again. The comparisons use
 * the mean of the runs on both sides of the others, so a drift of this shared machine weighs on both.
 * Besides req/s, each server run reports the server process's CPU time per request, which other processes
 * on the machine disturb much less.
 *
 * Then, with the server stopped, the admin's audit query at 1,000,000 rows (audit.ts, in a child process on
 * a scratch database): the first page and a 90%-deep page, unfiltered and filtered.
 *
 *   npm run bench -- [--duration 5] [--warmup 2] [--connections 32] [--rules 100000] [--audit-rows 1000000] [--profile] [--workers n|auto]
 *   npm run bench -- --access [--access-users 100000]
 *   npm run bench -- --soak [--duration 60] [--connections 16]
 *   npm run bench -- --db postgres [--duration 5] [--warmup 2] [--connections 32]
 *
 * --db postgres runs only the exchange @32 (10 rules), on: SQLite, one node; PostgreSQL, one node; PostgreSQL,
 * two nodes (two server processes on one database, the connections split between them). The PostgreSQL
 * database is created fresh (idjag_bench_<random>, through IDJAG_BENCH_PG_URL or IDJAG_TEST_PG_URL, default
 * postgres://postgres@127.0.0.1:5432/test) and dropped at the end, also on failure. JSON in
 * test-output/bench-postgres.json.
 *
 * Last, effective access at 100,000 users, 100 groups and 1,000 rules (access.ts, in a child process on a
 * scratch database): a target's first page, a deep page, a user's, a client's, sparse targets, and a target's
 * whole CSV export with the heap it holds on to. `--access` runs only that section (JSON in
 * test-output/bench-access.json); `--access-users 0` leaves it out of the full run.
 *
 * --workers runs the server with that many workers instead of the default (one per core, up to four: what
 * `npm start` runs), for comparisons; the results say which ran. --profile writes V8 CPU profiles of the server
 * (one per worker) and the floor to test-output/profiles/. --audit-rows 0 skips
 * the audit query timing. --keep leaves the benchmark's database in place (its path is printed), to look at the
 * rows it wrote. --soak runs soak.ts instead (mixed traffic; see there).
 * Exits 1 only when a run had errors (non-200 responses, socket errors, timeouts); the targets are reported
 * as PASS/MISS, not asserted.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { basic, DEMO_AGENT, signIn } from '../helpers/browser.ts';
import { ID_JAG, ID_TOKEN, TOKEN_EXCHANGE } from '../helpers/exchange.ts';
import type { AccessScaleResult } from './access.ts';
import type { AuditScaleResult } from './audit.ts';
import { randomBytes } from 'node:crypto';
import { maintenance, pgMaintenanceUrl, quoteIdent } from '../helpers/pg-admin.ts';
import { AUDIT_SCHEMA, openDatabase, POOL_SIZE } from '../../src/db/index.ts';
import { addBenchUsers, addSyntheticRules, addSyntheticRulesVia, BENCH_CC, idTokensLike, openSqlite, prepareDatabase, removeSynthetic, rulePlan, TODO_AS, TODO_MCP } from './fixtures.ts';
import { firstLine, fmt, HERE, OUT, percentile, startServer, table, type ServerHandle } from './harness.ts';
import { runSoak } from './soak.ts';

const { values: flags } = parseArgs({
  options: {
    soak: { type: 'boolean', default: false },
    db: { type: 'string', default: 'sqlite' },
    duration: { type: 'string' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string' },
    rules: { type: 'string', default: '100000' },
    'audit-rows': { type: 'string', default: '1000000' },
    access: { type: 'boolean', default: false },
    'access-users': { type: 'string', default: '100000' },
    profile: { type: 'boolean', default: false },
    workers: { type: 'string' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});
if (flags.help) {
  console.log('npm run bench -- [--duration s] [--warmup s] [--connections n] [--rules n] [--audit-rows n, 0 skips] [--profile] [--workers n|auto] [--keep]');
  console.log('npm run bench -- --access [--access-users n]   (effective access only; --access-users 0 leaves it out of the full run)');
  console.log('npm run bench -- --soak [--duration s (60)] [--connections n (16)] [--profile]');
  console.log('npm run bench -- --db postgres [--duration s] [--warmup s] [--connections n]   (IDJAG_BENCH_PG_URL, default ' + pgMaintenanceUrl() + ')');
  process.exit(0);
}
const DURATION = Number(flags.duration ?? (flags.soak ? 60 : 5));
const WARMUP = Number(flags.warmup);
const CONNECTIONS = Number(flags.connections ?? (flags.soak ? 16 : 32));
const BIG_RULES = Number(flags.rules);
const AUDIT_ROWS = Number(flags['audit-rows']);
const AUDIT_RUNS = 20;
const ACCESS_USERS = Number(flags['access-users']);
const ACCESS_RUNS = 10;
for (const [name, v, min] of [['duration', DURATION, 1], ['warmup', WARMUP, 0], ['connections', CONNECTIONS, 1], ['rules', BIG_RULES, 11], ['audit-rows', AUDIT_ROWS, 0], ['access-users', ACCESS_USERS, 0]] as const) {
  if (!Number.isFinite(v) || v < min) {
    console.error(`--${name} must be a number >= ${min}`);
    process.exit(2);
  }
}
if (flags.db !== 'sqlite' && flags.db !== 'postgres') {
  console.error('--db must be sqlite (the full benchmark) or postgres (the exchange on SQLite and PostgreSQL, one and two nodes)');
  process.exit(2);
}
if (flags.db === 'postgres' && flags.soak) {
  console.error('--db postgres and --soak do not combine');
  process.exit(2);
}
if (ACCESS_USERS > 0 && ACCESS_USERS < 1000) {
  console.error('--access-users must be 0 (skip) or at least 1000');
  process.exit(2);
}
if (flags.access && (flags.soak || flags.db !== 'sqlite' || ACCESS_USERS === 0)) {
  console.error('--access runs the effective-access section alone: it takes --access-users (at least 1000) only');
  process.exit(2);
}
if (AUDIT_ROWS > 0 && AUDIT_ROWS < 1000) {
  console.error('--audit-rows must be 0 (skip) or at least 1000');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------------------
// child processes

/** Node flags for the children: the parent's (type stripping), without any profiling flag of its own. */
const childArgs = (profileName: string) => [
  ...process.execArgv.filter((a) => !a.startsWith('--cpu-prof') && !a.startsWith('--heap-prof')),
  ...(flags.profile ? ['--cpu-prof', `--cpu-prof-dir=${join(OUT, 'profiles')}`, `--cpu-prof-name=${profileName}-${Date.now()}.cpuprofile`] : []),
];

interface FloorResult {
  ops: number;
  seconds: number;
  opsPerSec: number;
  cpuSeconds: number;
  cpuUsPerOp: number;
  wallUsPerOp: number;
  breakdownUs: Record<string, number>;
  /** time inside SQLite per statement, from the breakdown pass */
  sqlUs: { sql: string; perExchange: number; usPerCall: number }[];
}

interface TrueFloorResult {
  ops: number;
  seconds: number;
  opsPerSec: number;
  cpuSeconds: number;
  cpuUsPerOp: number;
}

/** The true floor (true-floor.ts): the unavoidable work written plainly, no project code, CONNECTIONS in flight. */
async function runTrueFloor(): Promise<TrueFloorResult> {
  const child = spawn(process.execPath, [...childArgs('true-floor'), join(HERE, 'true-floor.ts'),
    '--duration', String(DURATION), '--warmup', String(WARMUP), '--concurrency', String(CONNECTIONS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await firstLine(child, 'true floor');
  await new Promise<void>((resolve) => (child.exitCode === null ? child.once('exit', () => resolve()) : resolve()));
  return JSON.parse(line) as TrueFloorResult;
}

async function runFloor(database: string, issuer: string, idToken: string): Promise<FloorResult> {
  const child = spawn(process.execPath, [...childArgs('floor'), join(HERE, 'floor.ts'),
    '--database', database, '--issuer', issuer, '--duration', String(DURATION), '--warmup', String(WARMUP)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  child.stdin!.end(idToken);
  const line = await firstLine(child, 'floor');
  await new Promise<void>((resolve) => (child.exitCode === null ? child.once('exit', () => resolve()) : resolve()));
  return JSON.parse(line) as FloorResult;
}

interface AuditStorage {
  rows: number;
  issuedRows: number;
  tableBytes: number;
  indexBytes: number;
  bytesPerRow: number;
  /** bytes per row of each part on disk (the table, each index), and the table's widest columns' average lengths */
  parts: Record<string, number>;
  columns: Record<string, number>;
}

/**
 * What the audit log takes on disk after the runs: its table and its indexes (SQLite's dbstat: the pages each
 * occupies), per row. Every row the bench wrote is a real decision of the server under load.
 */
function auditStorage(dbFile: string): AuditStorage {
  const database = openSqlite(dbFile);
  try {
    const s = database.sqlite;
    s.pragma(`${AUDIT_SCHEMA}.wal_checkpoint(TRUNCATE)`);
    const indexes = (s.prepare(`select name from ${AUDIT_SCHEMA}.sqlite_master where type = 'index' and tbl_name = 'audit_log'`).all() as { name: string }[]).map((r) => r.name);
    const bytes = (names: string[]) => (names.length ? Number((s.prepare(`select coalesce(sum(pgsize), 0) as b from dbstat(?) where name in (${names.map(() => '?').join(',')})`).get(AUDIT_SCHEMA, ...names) as { b: number }).b) : 0);
    const { n, issued } = s.prepare("select count(*) as n, sum(decision = 'issued') as issued from audit_log").get() as { n: number; issued: number };
    const tableBytes = bytes(['audit_log']);
    const indexBytes = bytes(indexes);
    const parts = Object.fromEntries(['audit_log', ...indexes].map((name) => [name, n ? bytes([name]) / n : 0]));
    const names = (s.prepare('select name from pragma_table_info(\'audit_log\')').all() as { name: string }[]).map((r) => r.name);
    const avg = s.prepare(`select ${names.map((c) => `avg(length(${JSON.stringify(c)})) as ${JSON.stringify(c)}`).join(', ')} from audit_log`).get() as Record<string, number | null>;
    const columns = Object.fromEntries(Object.entries(avg).map(([c, v]): [string, number] => [c, v ?? 0]).sort((a, b) => b[1] - a[1]).slice(0, 8));
    return { rows: n, issuedRows: issued, tableBytes, indexBytes, bytesPerRow: n ? (tableBytes + indexBytes) / n : 0, parts, columns };
  } finally {
    void database.close();
  }
}

/** The audit query at scale (audit.ts), in a child process of its own, on a scratch database. */
async function runAuditScale(): Promise<AuditScaleResult> {
  const child = spawn(process.execPath, [...childArgs('audit'), join(HERE, 'audit.ts'), '--rows', String(AUDIT_ROWS), '--runs', String(AUDIT_RUNS)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await firstLine(child, 'audit query timing');
  await new Promise<void>((resolve) => (child.exitCode === null ? child.once('exit', () => resolve()) : resolve()));
  return JSON.parse(line) as AuditScaleResult;
}

/** Effective access at scale (access.ts), in a child process of its own (with a GC it can force), on a scratch database. */
async function runAccessScale(): Promise<AccessScaleResult> {
  const child = spawn(process.execPath, [...childArgs('access'), '--expose-gc', join(HERE, 'access.ts'), '--users', String(ACCESS_USERS), '--runs', String(ACCESS_RUNS)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await firstLine(child, 'effective access timing');
  await new Promise<void>((resolve) => (child.exitCode === null ? child.once('exit', () => resolve()) : resolve()));
  return JSON.parse(line) as AccessScaleResult;
}

/** The effective-access figures as report lines. */
function accessLines(a: AccessScaleResult): string[] {
  const e = a.export;
  return [
    `effective access at ${fmt(a.users)} users, ${a.groups} groups, ${fmt(a.rules)} rules (GET /admin/api/access: accessPage, a page of 50; ms, mean of ${a.runs} runs after a first one;`
      + ` scratch database of ${fmt(a.databaseMiB)} MiB filled in ${fmt(a.fillMs / 1000, 1)} s):`,
    ...table([
      ['query', 'rows', 'first run ms', 'mean ms', 'max ms'],
      ...a.pages.map((p) => [p.name, fmt(p.timing.rows), fmt(p.timing.firstRunMs, 2), fmt(p.timing.meanMs, 2), fmt(p.timing.maxMs, 2)]),
    ]).map((l) => `  ${l}`),
    `  export of ${a.target} (GET /admin/api/access/export?format=csv): ${fmt(e.rows)} rows, ${fmt(e.bytes / 2 ** 20, 1)} MiB in ${fmt(e.seconds, 2)} s`
      + ` (${fmt(e.rowsPerSecond)} rows/s); heap ${fmt(e.heapBeforeMiB, 1)} MiB before, at most ${fmt(e.heapMaxMiB, 1)} MiB with garbage,`
      + ` ${e.heapLiveMaxMiB === null ? 'live heap not measured (no --expose-gc)' : `at most ${fmt(e.heapLiveMaxMiB, 1)} MiB live`}; RSS at most ${fmt(e.rssMaxMiB)} MiB`,
    '',
  ];
}

/** `--access`: the effective-access section alone. */
async function accessOnly(): Promise<void> {
  const startedAt = Date.now();
  mkdirSync(OUT, { recursive: true });
  process.stderr.write('  effective access: ');
  const access = await runAccessScale();
  process.stderr.write(' done\n');
  console.log(['', ...accessLines(access), `total ${fmt((Date.now() - startedAt) / 1000, 1)} s; JSON in test-output/bench-access.json`, ''].join('\n'));
  writeFileSync(join(OUT, 'bench-access.json'), `${JSON.stringify({ at: new Date(startedAt).toISOString(), access }, null, 2)}\n`);
}

// ---------------------------------------------------------------------------------------------------------
// load

interface Load {
  name: string;
  url: string;
  headers: Record<string, string>;
  body: string;
  /** bodies to send in turn instead of `body` (the exchange: one per bench user) */
  bodies?: string[];
}

/**
 * The exchange's load is an enterprise's: BENCH_USERS users behind one client id, sent in turn, so each stays
 * within the default per-user limit (300 a minute) at any rate this machine reaches; the per-client ceiling is
 * the default too. The bench runs the server's default configuration.
 */
const BENCH_USERS = 1000;

interface RunResult {
  scenario: string;
  connections: number;
  rules: number;
  seconds: number;
  requests: number;
  reqPerSec: number;
  /** the server process's CPU time per request (every thread): steadier than req/s on a shared machine */
  serverCpuUsPerReq: number;
  /** CPU seconds per second the server used (1 = one core busy) */
  serverCpuLoad: number;
  /** time the server spent in GC pauses, per request */
  serverGcUsPerReq: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  ok200: number;
  non200: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  warmup: { requests: number; non200: number; errors: number };
}

interface Shot { result: autocannon.Result; latencies: number[] }

/**
 * One autocannon run. Its own histogram keeps whole milliseconds only, too coarse at one connection, so
 * the latencies (ms, as floats) are also collected from the tracker's per-response events.
 */
async function cannon(load: Load, connections: number, seconds: number): Promise<Shot> {
  const latencies: number[] = [];
  const { bodies } = load;
  let next = 0;
  const instance = autocannon({
    url: load.url,
    method: 'POST',
    headers: load.headers,
    body: load.body,
    ...(bodies?.length ? { requests: [{ setupRequest: (req: autocannon.Request) => ({ ...req, body: bodies[next++ % bodies.length] }) }] } : {}),
    connections,
    duration: seconds,
    timeout: 10,
  }) as unknown as Promise<autocannon.Result> & NodeJS.EventEmitter;
  // the tracker's event passes the client first (the typings omit it)
  instance.on('response', (_client: unknown, _status: number, _bytes: number, ms: number) => void latencies.push(ms));
  return { result: await instance, latencies };
}

function statusCounts(r: autocannon.Result): Record<string, number> {
  return Object.fromEntries(Object.entries(r.statusCodeStats ?? {}).map(([code, s]) => [code, s.count ?? 0]));
}

const non200 = (r: autocannon.Result) => Object.entries(statusCounts(r)).reduce((n, [code, count]) => n + (code === '200' ? 0 : count), 0);

async function measure(server: ServerHandle, load: Load, connections: number, rules: number): Promise<RunResult> {
  return measureSpread([server], [load], connections, rules);
}

/**
 * One measured run over one or more servers: `connections` split between them (one autocannon each, all at
 * once), `loads[i]` aimed at `servers[i]`. Counts and latencies are merged; the CPU time is the sum over the
 * servers.
 */
async function measureSpread(servers: ServerHandle[], loads: Load[], connections: number, rules: number): Promise<RunResult> {
  const load = loads[0]!;
  const nodes = servers.length;
  const label = `${load.name}, ${connections} connection${connections > 1 ? 's' : ''}, ${rules.toLocaleString('en-US')} rules${nodes > 1 ? `, ${nodes} nodes` : ''}`;
  process.stderr.write(`  ${label}: warm-up ${WARMUP} s, run ${DURATION} s ...`);
  const share = (i: number) => Math.floor(connections / nodes) + (i < connections % nodes ? 1 : 0);
  const spread = (seconds: number) => Promise.all(loads.map((l, i) => cannon(l, share(i), seconds)));
  const cpu = async () => (await Promise.all(servers.map((s) => s.cpu()))).reduce((a, b) => ({ cpuUs: a.cpuUs + b.cpuUs, gcUs: a.gcUs + b.gcUs }));
  const warm = WARMUP > 0 ? (await spread(WARMUP)).map((w) => w.result) : undefined;
  const before = await cpu();
  const shots = await spread(DURATION);
  const after = await cpu();
  const cpuUs = after.cpuUs - before.cpuUs;
  const latencies = shots.flatMap((s) => s.latencies).sort((a, b) => a - b);
  const results = shots.map((s) => s.result);
  const duration = Math.max(...results.map((r) => r.duration));
  const requests = results.reduce((n, r) => n + r.requests.total, 0);
  const round = (n: number) => Math.round(n * 100) / 100;
  const codes: Record<string, number> = {};
  for (const r of results) for (const [code, count] of Object.entries(statusCounts(r))) codes[code] = (codes[code] ?? 0) + count;
  const ok = codes['200'] ?? 0;
  const sum = (rs: autocannon.Result[], f: (r: autocannon.Result) => number) => rs.reduce((n, r) => n + f(r), 0);
  const result: RunResult = {
    scenario: load.name,
    connections,
    rules,
    seconds: duration,
    requests,
    // completed 200s over the measured time: errors do not count as throughput
    reqPerSec: ok / duration,
    serverCpuUsPerReq: cpuUs / Math.max(1, requests),
    serverCpuLoad: cpuUs / 1e6 / duration,
    serverGcUsPerReq: (after.gcUs - before.gcUs) / Math.max(1, requests),
    meanMs: round(latencies.reduce((a, b) => a + b, 0) / latencies.length),
    p50Ms: round(percentile(latencies, 50)),
    p90Ms: round(percentile(latencies, 90)),
    p99Ms: round(percentile(latencies, 99)),
    maxMs: round(latencies.at(-1) ?? NaN),
    ok200: ok,
    non200: sum(results, non200),
    errors: sum(results, (r) => r.errors),
    timeouts: sum(results, (r) => r.timeouts),
    statusCodes: codes,
    warmup: warm ? { requests: sum(warm, (r) => r.requests.total), non200: sum(warm, non200), errors: sum(warm, (r) => r.errors) } : { requests: 0, non200: 0, errors: 0 },
  };
  process.stderr.write(` ${Math.round(result.reqPerSec)} req/s\n`);
  return result;
}

const failed = (r: RunResult) => r.non200 + r.errors + r.timeouts + r.warmup.non200 + r.warmup.errors > 0 || r.ok200 === 0;

// ---------------------------------------------------------------------------------------------------------
// the benchmark

async function main() {
  const startedAt = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'idjag-bench-'));
  const dbFile = join(dir, 'idjag.db');
  mkdirSync(OUT, { recursive: true });
  if (flags.profile) mkdirSync(join(OUT, 'profiles'), { recursive: true });
  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    loadavg: loadavg().map((l) => Math.round(l * 100) / 100),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
  };
  console.error(`idjag bench: ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}; warm-up ${WARMUP} s, runs ${DURATION} s`);

  await prepareDatabase(dbFile);
  // Ten rules: the seed's one (demo-agent → todo MCP for engineering) and nine others.
  const admin = openSqlite(dbFile);
  const smallRules = addSyntheticRules(admin.sqlite, { prefix: 'small', clients: 7, servers: 2, demoAgentRules: 2, rules: 9 });
  await admin.close();

  let server: ServerHandle | undefined;
  let workers = 0;
  const runs: RunResult[] = [];
  const floors: FloorResult[] = [];
  const trueFloors: TrueFloorResult[] = [];
  let storage: AuditStorage | undefined;
  let bigRules = 0;
  let plan = '';
  try {
    server = await startServer(dbFile, childArgs('server'), undefined, flags.workers);
    workers = server.workers;
    const signedIn = await signIn(server.url, { username: 'alice', password: 'alice' });
    const idToken = String(signedIn.tokens.id_token ?? '');
    if (!idToken) throw new Error('sign-in returned no ID Token');

    const exchangeLoad = exchangeAt(server.url, await benchIdTokens(dbFile, idToken));
    const ccLoad: Load = {
      name: 'client_credentials (baseline)',
      url: `${server.url}/token`,
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(BENCH_CC.id, BENCH_CC.secret) },
      body: new URLSearchParams({ grant_type: 'client_credentials' }).toString(),
    };
    // One request of each by hand first: a wrong setup fails here with the server's words, not as N non-200s.
    for (const [load, expect] of [[exchangeLoad, 'issued_token_type'], [ccLoad, 'access_token']] as const) {
      const res = await fetch(load.url, { method: 'POST', headers: load.headers, body: load.body });
      const body = await res.json() as Record<string, unknown>;
      if (res.status !== 200 || body[expect] === undefined) throw new Error(`${load.name}: ${res.status} ${JSON.stringify(body)}`);
    }

    const floor = async () => {
      process.stderr.write(`  true floor (no project code, ${CONNECTIONS} in flight): warm-up ${WARMUP} s, run ${DURATION} s ...`);
      const t = await runTrueFloor();
      process.stderr.write(` ${Math.round(t.opsPerSec)} ops/s, ${Math.round(t.cpuUsPerOp)} µs CPU per op\n`);
      trueFloors.push(t);
      process.stderr.write(`  the exchange in-process (its pipeline and audit row, no HTTP; for the per-stage breakdown) ...`);
      const f = await runFloor(dbFile, server!.issuer, idToken);
      process.stderr.write(` ${Math.round(f.opsPerSec)} ops/s, ${Math.round(f.cpuUsPerOp)} µs CPU per exchange\n`);
      floors.push(f);
    };
    await floor();

    // A freshly started server is still compiling its hot paths: with only the per-run warm-up, the first run
    // at 32 connections cost up to ~20% more CPU per request than the same run later. Warm both grants up
    // once, longer, first.
    process.stderr.write(`  server warm-up: ${2 * WARMUP} s of each grant at ${CONNECTIONS} connections ...`);
    for (const load of WARMUP > 0 ? [exchangeLoad, ccLoad] : []) {
      const { result } = await cannon(load, CONNECTIONS, 2 * WARMUP);
      if (non200(result) || result.errors) throw new Error(`${load.name}: ${non200(result)} non-200 responses and ${result.errors} errors while warming up`);
    }
    process.stderr.write(' done\n');
    runs.push(await measure(server, exchangeLoad, 1, smallRules));
    runs.push(await measure(server, exchangeLoad, CONNECTIONS, smallRules));
    runs.push(await measure(server, ccLoad, CONNECTIONS, smallRules));

    // Bulk rules into the live database (the server reads rules per request; nothing to restart).
    const bulkStarted = performance.now();
    const bulk = openSqlite(dbFile);
    bigRules = addSyntheticRules(bulk.sqlite, {
      prefix: 'bulk', clients: 1000, servers: 100, demoAgentRules: Math.min(300, BIG_RULES - smallRules), rules: BIG_RULES - smallRules,
    });
    bulk.sqlite.pragma('wal_checkpoint(TRUNCATE)');
    plan = rulePlan(bulk.sqlite);
    await bulk.close();
    console.error(`  (inserted ${(bigRules - smallRules).toLocaleString('en-US')} rules in ${Math.round(performance.now() - bulkStarted)} ms; rule lookup plan: ${plan})`);
    runs.push(await measure(server, exchangeLoad, CONNECTIONS, bigRules));

    // Back to ten rules and once more, so the comparison brackets the big run (drift shows up here).
    const cleanup = openSqlite(dbFile);
    const back = removeSynthetic(cleanup.sqlite, 'bulk');
    cleanup.sqlite.pragma('wal_checkpoint(TRUNCATE)');
    await cleanup.close();
    runs.push(await measure(server, exchangeLoad, CONNECTIONS, back));
    // and the floor once more, after the server runs, for the same reason
    await floor();
    await server.stop();
    server = undefined;
    storage = auditStorage(dbFile);
  } finally {
    await server?.stop();
    if (flags.keep) console.error(`the benchmark's database is kept: ${dbFile} (and its audit file beside it)`);
    else rmSync(dir, { recursive: true, force: true });
  }

  // The admin's audit query at a million rows, last: its bulk insert would disturb the runs above.
  let audit: AuditScaleResult | undefined;
  if (AUDIT_ROWS > 0) {
    process.stderr.write('  audit query: ');
    audit = await runAuditScale();
    process.stderr.write(' done\n');
  }

  // Effective access at 100,000 users, after the server runs for the same reason.
  let access: AccessScaleResult | undefined;
  if (ACCESS_USERS > 0) {
    process.stderr.write('  effective access: ');
    access = await runAccessScale();
    process.stderr.write(' done\n');
  }

  // -------------------------------------------------------------------------------------------------------
  // report
  const [floorBefore, floorAfter] = floors;
  const [trueBefore, trueAfter] = trueFloors;
  if (!floorBefore || !floorAfter || !trueBefore || !trueAfter || runs.length !== 5) throw new Error('a run is missing');
  const [, ex32First, cc32, exBig, ex32Again] = runs as [RunResult, RunResult, RunResult, RunResult, RunResult];
  // Each side of a comparison is the mean of two runs that bracket the other runs in time, so a drift of the
  // machine (other processes, JIT, a growing audit log) weighs on both sides alike.
  const mean = (a: number, b: number) => (a + b) / 2;
  const ex32 = { reqPerSec: mean(ex32First.reqPerSec, ex32Again.reqPerSec), cpuUsPerReq: mean(ex32First.serverCpuUsPerReq, ex32Again.serverCpuUsPerReq) };
  const floor = { opsPerSec: mean(trueBefore.opsPerSec, trueAfter.opsPerSec), cpuUsPerOp: mean(trueBefore.cpuUsPerOp, trueAfter.cpuUsPerOp) };
  const inProcess = { opsPerSec: mean(floorBefore.opsPerSec, floorAfter.opsPerSec), cpuUsPerOp: mean(floorBefore.cpuUsPerOp, floorAfter.cpuUsPerOp) };
  const ratios = {
    exchangeVsFloor: ex32.reqPerSec / floor.opsPerSec,
    exchangeVsClientCredentials: ex32.reqPerSec / cc32.reqPerSec,
    bigRulesVsSmallRules: exBig.reqPerSec / ex32.reqPerSec,
  };
  // The same comparisons in CPU time per request: what each costs, whatever else the machine was doing.
  const cpuRatios = {
    exchangeVsFloor: floor.cpuUsPerOp / ex32.cpuUsPerReq,
    exchangeVsClientCredentials: cc32.serverCpuUsPerReq / ex32.cpuUsPerReq,
    bigRulesVsSmallRules: ex32.cpuUsPerReq / exBig.serverCpuUsPerReq,
  };
  const targets = [
    { target: `exchange @${CONNECTIONS} ≥ 0.35 × the true floor`, ratio: ratios.exchangeVsFloor, min: 0.35 },
    { target: `exchange @${CONNECTIONS} ≥ 1.0 × client_credentials @${CONNECTIONS}`, ratio: ratios.exchangeVsClientCredentials, min: 1.0 },
    { target: `exchange @${CONNECTIONS}: p50 ÷ p99 ≥ 1/3 (p99 ≤ 3 × p50)`, ratio: mean(ex32First.p50Ms / ex32First.p99Ms, ex32Again.p50Ms / ex32Again.p99Ms), min: 1 / 3 },
    { target: `exchange @${CONNECTIONS}: ${bigRules.toLocaleString('en-US')} rules within 10% of ${smallRules} rules`, ratio: ratios.bigRulesVsSmallRules, min: 0.9 },
    ...(storage ? [{ target: 'audit storage ≤ 600 bytes per row (600 ÷ bytes per row ≥ 1)', ratio: 600 / storage.bytesPerRow, min: 1 }] : []),
  ].map((t) => ({ ...t, pass: t.ratio >= t.min }));
  const errors = runs.filter(failed);
  const loadAfter = loadavg().map((l) => Math.round(l * 100) / 100);
  const busy = machine.loadavg[0]! > machine.cpus / 2;

  const rows: string[][] = [
    ['scenario', 'conns', 'rules', 'req/s', 'CPU µs/req', 'GC µs/req', 'CPU load', 'mean ms', 'p50 ms', 'p99 ms', 'max ms', '200', 'non-200', 'errors'],
    ...runs.map((r) => [r.scenario, String(r.connections), fmt(r.rules), fmt(r.reqPerSec), fmt(r.serverCpuUsPerReq), fmt(r.serverGcUsPerReq), fmt(r.serverCpuLoad, 2), fmt(r.meanMs, 2), fmt(r.p50Ms, 2), fmt(r.p99Ms, 2), fmt(r.maxMs, 1),
      fmt(r.ok200), fmt(r.non200 + r.warmup.non200), fmt(r.errors + r.timeouts + r.warmup.errors)]),
    ...trueFloors.map((f, i) => [`true floor: verify + SELECT + INSERT + sign, no project code (ops/s, ${i ? 'after' : 'before'})`, String(CONNECTIONS), '-', fmt(f.opsPerSec), fmt(f.cpuUsPerOp), '-',
      fmt(f.cpuSeconds / f.seconds, 2), '-', '-', '-', '-', fmt(f.ops), '-', '-']),
    ...floors.map((f, i) => [`the exchange in-process, no HTTP (ops/s, ${i ? 'after' : 'before'})`, '1', fmt(smallRules), fmt(f.opsPerSec), fmt(f.cpuUsPerOp), '-',
      fmt(f.cpuSeconds / f.seconds, 2), fmt(f.wallUsPerOp / 1000, 2), '-', '-', '-', fmt(f.ops), '-', '-']),
  ];
  const auditLines = audit ? [
    `admin audit query at ${fmt(audit.rows)} rows (GET /admin/api/audit: searchAudit, a page of ${audit.pageSize}; ms, mean of ${audit.runs} runs after a first one;`
      + ` scratch database of ${fmt(audit.databaseMiB)} MiB filled in ${fmt(audit.insertMs / 1000, 1)} s):`,
    ...table([
      ['filter', 'matching rows', 'first page ms', 'max', 'deep page: after rows', 'ms', 'max', 'index'],
      ...audit.timings.map((t) => [t.filter, fmt(t.matching), fmt(t.first.meanMs, 2), fmt(t.first.maxMs, 2), fmt(t.deepOffset), fmt(t.deep.meanMs, 2), fmt(t.deep.maxMs, 2),
        /USING (?:COVERING )?INDEX (\w+)/.exec(t.deep.plan)?.[1] ?? t.deep.plan]),
    ]).map((l) => `  ${l}`),
    '',
  ] : [];
  const out = [
    '',
    `idjag benchmark — ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}, ${machine.platform}, load avg before ${machine.loadavg.join(' ')}`,
    `each server run: ${WARMUP} s warm-up, then ${DURATION} s measured (autocannon in the parent, idjag in a child process: ${workers} worker${workers === 1 ? '' : 's'}${flags.workers ? ' (--workers)' : ', the default'}); load avg after ${loadAfter.join(' ')}`,
    ...(busy ? [`note: the machine was already busy before the bench (1-min load ${machine.loadavg[0]} on ${machine.cpus} CPUs): other processes share the cores, expect noise`] : []),
    '',
    ...table(rows),
    '',
    `CPU µs/req: the server process's CPU time (all threads) per request; GC µs/req: its time in GC pauses per request; CPU load: its CPU seconds per second (1.00 = one core)`,
    `true floor: ${fmt(floor.cpuUsPerOp)} µs CPU per op; the exchange in-process: ${fmt(inProcess.cpuUsPerOp)} µs CPU per exchange; per stage, wall (µs): ${Object.entries(floorBefore.breakdownUs).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `the exchange in-process: time inside SQLite per exchange (µs per call × calls): ${floorBefore.sqlUs.map((q) => `${q.sql.split(' ').slice(0, 3).join(' ')} ${q.usPerCall}×${q.perExchange}`).join(', ')}`,
    `rule lookup plan: ${plan}`,
    ...(storage ? [
      `audit storage: ${fmt(storage.bytesPerRow)} bytes per row (table ${fmt(storage.tableBytes / 1024 / 1024, 1)} MiB + indexes ${fmt(storage.indexBytes / 1024 / 1024, 1)} MiB for ${fmt(storage.rows)} rows, ${fmt(storage.issuedRows)} issued)`,
      `  per part (bytes per row): ${Object.entries(storage.parts).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`,
      `  widest columns (average length): ${Object.entries(storage.columns).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`,
    ] : []),
    '',
    `targets${errors.length ? ' (not meaningful: some runs failed)' : ''}:`,
    ...targets.map((t) => `  ${t.pass ? 'PASS' : 'MISS'}  ${t.target}: ${t.ratio.toFixed(2)}×`),
    `  the same ratios in CPU time per request (cost of the cheaper ÷ cost of the exchange): true floor ${cpuRatios.exchangeVsFloor.toFixed(2)}×,`
      + ` client_credentials ${cpuRatios.exchangeVsClientCredentials.toFixed(2)}×, ${fmt(bigRules)} vs ${fmt(smallRules)} rules ${cpuRatios.bigRulesVsSmallRules.toFixed(2)}×`,
    `  (exchange @${CONNECTIONS}, ${fmt(smallRules)} rules = ${fmt(ex32.reqPerSec)} req/s, mean of its runs before and after the others; true floor = ${fmt(floor.opsPerSec)} ops/s,`
      + ` mean of the two; client_credentials @${CONNECTIONS} = ${fmt(cc32.reqPerSec)} req/s; ${fmt(bigRules)} rules = ${fmt(exBig.reqPerSec)} req/s)`,
    '',
    ...auditLines,
    ...(access ? accessLines(access) : []),
    errors.length ? `FAILED: ${errors.length} run(s) had non-200 responses or errors: ${errors.map((r) => `${r.scenario} @${r.connections} (${JSON.stringify(r.statusCodes)}, ${r.errors} errors)`).join('; ')}`
      : 'every response was 200; no errors.',
    `total ${fmt((Date.now() - startedAt) / 1000, 1)} s; JSON in test-output/bench.json`,
    '',
  ];
  console.log(out.join('\n'));

  writeFileSync(join(OUT, 'bench.json'), `${JSON.stringify({
    at: new Date(startedAt).toISOString(),
    machine: { ...machine, loadavgAfter: loadAfter },
    settings: { durationSeconds: DURATION, warmupSeconds: WARMUP, connections: CONNECTIONS, bigRules: BIG_RULES, auditRows: AUDIT_ROWS, accessUsers: ACCESS_USERS, profile: flags.profile, workers },
    runs,
    trueFloor: { ...floor, runs: trueFloors },
    inProcessExchange: { ...inProcess, rules: smallRules, runs: floors },
    exchange32: { ...ex32, rules: smallRules },
    rulePlan: plan,
    auditStorage: storage ?? null,
    ratios,
    cpuRatios,
    targets,
    auditQuery: audit ?? null,
    effectiveAccess: access ?? null,
    ok: errors.length === 0,
  }, null, 2)}\n`);
  process.exitCode = errors.length ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------------------
// --db postgres: the exchange on SQLite and on PostgreSQL, one node and two

/** The exchange request of DEMO_AGENT for alice's ID Token, aimed at `url`. */
const exchangeBody = (idToken: string) => new URLSearchParams({
  grant_type: TOKEN_EXCHANGE, requested_token_type: ID_JAG, subject_token: idToken, subject_token_type: ID_TOKEN,
  audience: TODO_AS, resource: TODO_MCP,
}).toString();

const exchangeAt = (url: string, idTokens: string[]): Load => ({
  name: 'token exchange (ID-JAG)',
  url: `${url}/token`,
  headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(DEMO_AGENT.id, DEMO_AGENT.secret) },
  body: exchangeBody(idTokens[0]!),
  bodies: idTokens.map(exchangeBody),
});

/** BENCH_USERS users added to the live database, and an ID Token for each like the one the provider issued. */
async function benchIdTokens(location: string, template: string): Promise<string[]> {
  const database = openDatabase(location);
  try {
    return await idTokensLike(database.db, template, await addBenchUsers(database.db, BENCH_USERS));
  } finally {
    await database.close();
  }
}

/** One request by hand: a wrong setup fails here with the server's words, not as N non-200s. */
async function checkOnce(load: Load): Promise<void> {
  const res = await fetch(load.url, { method: 'POST', headers: load.headers, body: load.body });
  const body = await res.json() as Record<string, unknown>;
  if (res.status !== 200 || body.issued_token_type === undefined) throw new Error(`${load.name} at ${load.url}: ${res.status} ${JSON.stringify(body)}`);
}

/** Schema, seed, baseline client and the same nine synthetic rules as the default mode, through kysely on either dialect. */
async function prepareExchangeDatabase(location: string): Promise<number> {
  await prepareDatabase(location);
  const database = openDatabase(location);
  try {
    return await addSyntheticRulesVia(database.db, { prefix: 'small', clients: 7, servers: 2, demoAgentRules: 2, rules: 9 });
  } finally {
    await database.close();
  }
}

interface SetupResult extends RunResult { setup: string; nodes: number }

async function comparePostgres(): Promise<void> {
  const startedAt = Date.now();
  mkdirSync(OUT, { recursive: true });
  const maintenanceUrl = process.env.IDJAG_BENCH_PG_URL || pgMaintenanceUrl();
  const dir = mkdtempSync(join(tmpdir(), 'idjag-bench-'));
  const pgName = `idjag_bench_${randomBytes(6).toString('hex')}`;
  const pgUrl = new URL(maintenanceUrl);
  pgUrl.pathname = `/${pgName}`;
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version, loadavg: loadavg().map((l) => Math.round(l * 100) / 100) };
  console.error(`idjag bench --db postgres: ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}; warm-up ${WARMUP} s, runs ${DURATION} s, ${CONNECTIONS} connections; database ${pgName}`);

  const results: SetupResult[] = [];
  const servers: ServerHandle[] = [];
  let created = false;
  // one setup: sign in at the first server, check every server once, warm the servers up, measure
  const usersAdded = new Map<string, Promise<string[]>>();
  const setup = async (name: string, location: string, nodes: ServerHandle[], rules: number) => {
    const signedIn = await signIn(nodes[0]!.url, { username: 'alice', password: 'alice' });
    const idToken = String(signedIn.tokens.id_token ?? '');
    if (!idToken) throw new Error(`${name}: sign-in returned no ID Token`);
    if (!usersAdded.has(location)) usersAdded.set(location, benchIdTokens(location, idToken));
    const idTokens = await usersAdded.get(location)!;
    const loads = nodes.map((n) => exchangeAt(n.url, idTokens));
    for (const load of loads) await checkOnce(load);
    if (WARMUP > 0) {
      process.stderr.write(`  ${name}: server warm-up ${2 * WARMUP} s ...`);
      const share = Math.max(1, Math.floor(CONNECTIONS / nodes.length));
      const warm = await Promise.all(loads.map((l) => cannon(l, share, 2 * WARMUP)));
      for (const { result } of warm) {
        if (non200(result) || result.errors) throw new Error(`${name}: ${non200(result)} non-200 responses and ${result.errors} errors while warming up`);
      }
      process.stderr.write(' done\n');
    }
    results.push({ setup: name, nodes: nodes.length, ...await measureSpread(nodes, loads, CONNECTIONS, rules) });
  };
  const stopAll = async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
  };
  try {
    // (a) SQLite, one node
    const dbFile = join(dir, 'idjag.db');
    const sqliteRules = await prepareExchangeDatabase(dbFile);
    servers.push(await startServer(dbFile, childArgs('server-sqlite'), undefined, flags.workers));
    await setup('SQLite, 1 node', dbFile, [servers[0]!], sqliteRules);
    await stopAll();

    // (b) PostgreSQL, one node, on a fresh database
    await maintenance(`create database ${quoteIdent(pgName)}`, [], maintenanceUrl);
    created = true;
    const pgRules = await prepareExchangeDatabase(pgUrl.toString());
    const first = await startServer(pgUrl.toString(), childArgs('server-pg-1'), undefined, flags.workers);
    servers.push(first);
    await setup('PostgreSQL, 1 node', pgUrl.toString(), [first], pgRules);

    // (c) PostgreSQL, two nodes: a second process on the same database with the first one's issuer (an ID
    // Token from either is valid at both), the connections split between them
    servers.push(await startServer(pgUrl.toString(), childArgs('server-pg-2'), first.issuer, flags.workers));
    await setup('PostgreSQL, 2 nodes', pgUrl.toString(), [first, servers[1]!], pgRules);
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
    if (created) {
      await maintenance(`drop database if exists ${quoteIdent(pgName)} with (force)`, [], maintenanceUrl)
        .catch((err: unknown) => console.error(`could not drop ${pgName}: ${err instanceof Error ? err.message : String(err)}`));
    }
  }

  const [sqlite, pg1, pg2] = results as [SetupResult, SetupResult, SetupResult];
  const ratio = (a: SetupResult, b: SetupResult) => ({
    reqPerSec: a.reqPerSec / b.reqPerSec,
    p50: a.p50Ms / b.p50Ms,
    p99: a.p99Ms / b.p99Ms,
    cpuUsPerReq: a.serverCpuUsPerReq / b.serverCpuUsPerReq,
  });
  const ratios = { pg1VsSqlite: ratio(pg1, sqlite), pg2VsPg1: ratio(pg2, pg1) };
  const errors = results.filter(failed);
  const x = (n: number) => `${n.toFixed(2)}×`;
  const out = [
    '',
    `idjag benchmark, --db postgres — ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}, load avg before ${machine.loadavg.join(' ')}`,
    `token exchange, ${CONNECTIONS} connections, ${fmt(sqlite.rules)} rules; each setup: ${2 * WARMUP} s server warm-up, ${WARMUP} s warm-up, ${DURATION} s measured; PostgreSQL pool of ${POOL_SIZE} connections per node`,
    '',
    ...table([
      ['setup', 'nodes', 'req/s', 'p50 ms', 'p99 ms', 'CPU µs/req', 'CPU load', '200', 'non-200', 'errors'],
      ...results.map((r) => [r.setup, String(r.nodes), fmt(r.reqPerSec), fmt(r.p50Ms, 2), fmt(r.p99Ms, 2), fmt(r.serverCpuUsPerReq), fmt(r.serverCpuLoad, 2),
        fmt(r.ok200), fmt(r.non200 + r.warmup.non200), fmt(r.errors + r.timeouts + r.warmup.errors)]),
    ]),
    '',
    'CPU µs/req: the server processes\' CPU time (all threads, summed over the nodes) per request; CPU load: their CPU seconds per second',
    ...table([
      ['ratio', 'req/s', 'p50', 'p99', 'CPU µs/req'],
      ...([['PostgreSQL 1 node / SQLite', ratios.pg1VsSqlite], ['PostgreSQL 2 nodes / PostgreSQL 1 node', ratios.pg2VsPg1]] as const)
        .map(([name, r]) => [name, x(r.reqPerSec), x(r.p50), x(r.p99), x(r.cpuUsPerReq)]),
    ]),
    '',
    errors.length ? `FAILED: ${errors.length} run(s) had non-200 responses or errors: ${errors.map((r) => `${r.setup} (${JSON.stringify(r.statusCodes)}, ${r.errors} errors, ${r.timeouts} timeouts)`).join('; ')}`
      : 'every response was 200; no errors.',
    `total ${fmt((Date.now() - startedAt) / 1000, 1)} s; database ${pgName} dropped; JSON in test-output/bench-postgres.json`,
    '',
  ];
  console.log(out.join('\n'));
  writeFileSync(join(OUT, 'bench-postgres.json'), `${JSON.stringify({
    at: new Date(startedAt).toISOString(),
    machine: { ...machine, loadavgAfter: loadavg().map((l) => Math.round(l * 100) / 100) },
    settings: { durationSeconds: DURATION, warmupSeconds: WARMUP, connections: CONNECTIONS },
    runs: results,
    ratios,
    ok: errors.length === 0,
  }, null, 2)}\n`);
  process.exitCode = errors.length ? 1 : 0;
}

(flags.soak ? runSoak({ seconds: DURATION, concurrency: CONNECTIONS, nodeArgs: childArgs('server') }).then((ok) => void (process.exitCode = ok ? 0 : 1))
  : flags.access ? accessOnly() : flags.db === 'postgres' ? comparePostgres() : main()).catch((err: unknown) => {
  console.error('bench failed:', err instanceof Error ? err.stack ?? err.message : err);
  process.exitCode = 1;
});
