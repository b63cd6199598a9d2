/**
 * The exchange in-process, for the per-stage breakdown (not a floor: it runs the code under test; the floor
 * is true-floor.ts): the token exchange's own work, in a loop, in one process, without HTTP, koa or oidc-provider.
 * The same pipeline the grant (src/exchange/grant.ts) runs after client authentication (runExchange with the
 * database ports, its lookup cache and the signing minter), then its audit row (recordOutcome), against the
 * benchmark's real SQLite file. The grant gets the change counters with the client's read; with no client read
 * here, each exchange reads them on their own (one statement the server does not make). One request at a time, so the
 * result is what one core does.
 *
 * Prints one JSON line. Arguments: --database, --issuer, --duration, --warmup (seconds); the ID Token on stdin.
 */
import { parseArgs } from 'node:util';
import type Provider from 'oidc-provider';
import { recordOutcome, uuidv7 } from '../../src/audit/index.ts';
import { now } from '../../src/db/index.ts';
import { signingMinter } from '../../src/exchange/mint.ts';
import { EXCHANGE_STAGES, runExchange, type ExchangeStage } from '../../src/exchange/pipeline.ts';
import { databasePorts } from '../../src/exchange/ports.ts';
import { LookupCache } from '../../src/exchange/lookup-cache.ts';
import { readCounters } from '../../src/db/counters.ts';
import { ID_JAG, ID_TOKEN, TOKEN_EXCHANGE, type ExchangeInput } from '../../src/exchange/request.ts';
import { tokenSubjects } from '../../src/exchange/subject.ts';
import { activeKey, loadKeySet } from '../../src/oidc/keys.ts';
import { openSqlite, TODO_AS, TODO_MCP } from './fixtures.ts';

const { values } = parseArgs({
  options: {
    database: { type: 'string' }, issuer: { type: 'string' }, duration: { type: 'string', default: '5' }, warmup: { type: 'string', default: '2' },
  },
  strict: true,
});
if (!values.database || !values.issuer) {
  console.error('usage: floor.ts --database <file> --issuer <url> [--duration s] [--warmup s] < id_token');
  process.exit(2);
}
const issuer = values.issuer;
const idToken = (await new Response(process.stdin as unknown as ReadableStream).text()).trim();

const database = openSqlite(values.database);
const { db } = database;

/**
 * Time spent in SQLite per statement (during the breakdown pass): kysely's driver asks the statement-cache
 * facade of src/db for statements, which asks the real handle; wrapping the handle's prepare sees each
 * statement once and times its calls.
 */
const sqlTimes = new Map<string, { calls: number; us: number }>();
let timingSql = false;
const rawPrepare = database.sqlite.prepare.bind(database.sqlite);
Object.defineProperty(database.sqlite, 'prepare', {
  configurable: true,
  writable: true,
  value: (source: string) => {
    const stmt = rawPrepare(source);
    const entry = { calls: 0, us: 0 };
    sqlTimes.set(source, entry);
    for (const m of ['run', 'get', 'all'] as const) {
      const original = stmt[m].bind(stmt) as (...a: unknown[]) => unknown;
      Object.defineProperty(stmt, m, {
        configurable: true,
        writable: true,
        value: (...args: unknown[]) => {
          if (!timingSql) return original(...args);
          const t = performance.now();
          try {
            return original(...args);
          } finally {
            entry.calls++;
            entry.us += (performance.now() - t) * 1000;
          }
        },
      });
    }
    return stmt;
  },
});
const keys = await loadKeySet(db);
// Only the refresh-token path reads the provider; the ID Token path never touches it.
const provider = undefined as unknown as Provider;

const input: ExchangeInput = {
  client: { id: 'demo-agent', authMethod: 'client_secret_basic', grantTypes: [TOKEN_EXCHANGE], enabled: true },
  params: { requested_token_type: ID_JAG, subject_token: idToken, subject_token_type: ID_TOKEN, audience: TODO_AS, resource: TODO_MCP },
  credentialsInBody: false,
};
const stores = databasePorts(db);
const cache = new LookupCache();
const ports = {
  ...stores,
  lookup: async (q: Parameters<LookupCache['lookup']>[0]) => cache.lookup(q, await readCounters(db), stores.reads),
  subjects: tokenSubjects({ issuer, keys, provider }),
  issuer,
  clock: now,
};

type Step = ExchangeStage | 'audit';
const STEPS: Step[] = [...EXCHANGE_STAGES, 'audit'];

/** One exchange, as the grant runs it (the pipeline, then the audit row); `times` (optional) collects µs per step. */
async function exchangeOnce(times?: Record<Step, number>): Promise<string> {
  const started = performance.now();
  let t = started;
  let current: Step | undefined;
  const lap = (next: Step | 'end') => {
    if (times && current) times[current] += (performance.now() - t) * 1000;
    t = performance.now();
    current = next === 'end' ? undefined : next;
  };
  // as the grant does for a request whose id it generated: that id names the request, its audit row and the ID-JAG
  const id = uuidv7();
  const result = await runExchange(input, { ...ports, minter: signingMinter(() => activeKey(keys, 'id_jag'), id), stage: lap });
  if (result.outcome.kind !== 'issued') throw new Error(`floor: the exchange was not issued: ${result.record.explanation}`);
  lap('audit');
  await recordOutcome(db, {
    id, requestId: id, clientId: input.client.id, subjectTokenType: ID_TOKEN, audience: TODO_AS, resources: [TODO_MCP],
    ip: '127.0.0.1', userAgent: 'bench-floor', ...result.record, durationMs: performance.now() - started,
  });
  lap('end');
  return result.outcome.minted.jwt!;
}

async function loop(seconds: number, times?: Record<Step, number>) {
  const end = performance.now() + seconds * 1000;
  const cpu = process.cpuUsage();
  const start = performance.now();
  let ops = 0;
  while (performance.now() < end) {
    await exchangeOnce(times);
    ops++;
  }
  const wall = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return { ops, seconds: wall, cpuSeconds: (used.user + used.system) / 1e6 };
}

try {
  const jwt = await exchangeOnce();
  if (jwt.split('.').length !== 3) throw new Error('floor: mintIdJag returned no JWT');
  await loop(Number(values.warmup));
  const run = await loop(Number(values.duration));
  // A shorter second pass with timers between the steps: where the floor's time goes.
  const times = Object.fromEntries(STEPS.map((s) => [s, 0])) as Record<Step, number>;
  timingSql = true;
  const split = await loop(Math.max(1, Number(values.duration) / 5), times);
  timingSql = false;
  const round = (n: number) => Math.round(n * 10) / 10;
  const breakdownUs = Object.fromEntries(STEPS.map((s) => [s, round(times[s] / split.ops)]));
  const sqlUs = [...sqlTimes.entries()].filter(([, e]) => e.calls > 0)
    .map(([source, e]) => ({ sql: source.replace(/\s+/g, ' ').slice(0, 90), perExchange: round(e.calls / split.ops), usPerCall: round(e.us / e.calls) }))
    .sort((a, b) => b.usPerCall * b.perExchange - a.usPerCall * a.perExchange);
  process.stdout.write(`${JSON.stringify({
    ops: run.ops,
    seconds: run.seconds,
    opsPerSec: run.ops / run.seconds,
    cpuSeconds: run.cpuSeconds,
    cpuUsPerOp: (run.cpuSeconds / run.ops) * 1e6,
    wallUsPerOp: (run.seconds / run.ops) * 1e6,
    breakdownUs,
    sqlUs,
  })}\n`);
} finally {
  await database.close();
}
