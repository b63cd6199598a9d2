/**
 * The floor: the token exchange's own work, in a loop, in one process, without HTTP, koa or oidc-provider.
 * The same steps and the same functions the grant (src/exchange/grant.ts) runs after client authentication:
 * validateSubject (ID Token signature and claims, user, groups), resolveTarget, loadRules + decide,
 * mintIdJag, recordDecision, against the benchmark's real SQLite file. One request at a time, so the
 * result is what one core does.
 *
 * Prints one JSON line. Arguments: --database, --issuer, --duration, --warmup (seconds); the ID Token on stdin.
 */
import { parseArgs } from 'node:util';
import type Provider from 'oidc-provider';
import { recordDecision } from '../../src/audit/index.ts';
import { now } from '../../src/db/index.ts';
import { CheckList, DECISION_CHECKS, REQUEST_CHECKS } from '../../src/exchange/checks.ts';
import { idJagClaims, mintIdJag } from '../../src/exchange/mint.ts';
import { ID_TOKEN, type ExchangeRequest } from '../../src/exchange/request.ts';
import { subjectChecks, validateSubject } from '../../src/exchange/subject.ts';
import { loadRules, resolveTarget } from '../../src/exchange/target.ts';
import { activeKey, loadKeySet } from '../../src/oidc/keys.ts';
import { decide } from '../../src/policy/index.ts';
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

const req: ExchangeRequest = {
  clientId: 'demo-agent',
  subjectToken: idToken,
  subjectTokenType: ID_TOKEN,
  audience: TODO_AS,
  resources: [TODO_MCP],
  scopes: undefined,
};

type Step = 'checks' | 'subject' | 'target' | 'rules' | 'decide' | 'mint' | 'audit';
const STEPS: Step[] = ['checks', 'subject', 'target', 'rules', 'decide', 'mint', 'audit'];

/** One exchange, as the grant runs it; `times` (optional) collects µs per step. */
async function exchangeOnce(times?: Record<Step, number>): Promise<string> {
  const started = performance.now();
  let t = started;
  const lap = (step: Step) => {
    if (!times) return;
    const n = performance.now();
    times[step] += (n - t) * 1000;
    t = n;
  };
  const at = now();
  const checks = new CheckList(REQUEST_CHECKS);
  for (const c of REQUEST_CHECKS) checks.pass(c.name);
  checks.plan(subjectChecks(req.subjectTokenType));
  checks.plan(DECISION_CHECKS);
  lap('checks');
  const subject = await validateSubject(req, checks, { db, issuer, keys, provider, now: at });
  lap('subject');
  const target = await resolveTarget(db, checks, req.audience, req.resources);
  lap('target');
  const rules = await loadRules(db, req.clientId, target.resourceServer.id);
  lap('rules');
  const decision = decide({
    client: { id: req.clientId, enabled: true },
    user: { sub: subject.user.sub, enabled: !subject.user.disabled, groups: subject.groups },
    resourceServer: target.resourceServer,
    mcpServers: target.mcpServers,
    ...(subject.authTime !== undefined ? { authTime: subject.authTime } : {}),
    now: at,
  }, rules);
  if (!decision.allow) throw new Error(`floor: the policy denied the exchange: ${decision.explanation}`);
  checks.pass('policy', decision.explanation);
  checks.pass('scope', decision.scopes.join(' '));
  checks.pass('step_up');
  lap('decide');
  const claims = idJagClaims(issuer, subject, target.resourceServer.issuer, req.resources, decision);
  const minted = await mintIdJag(activeKey(keys, 'id_jag'), claims, decision.lifetime, at);
  checks.pass('issue', `jti ${minted.jti}, expires ${new Date(minted.exp * 1000).toISOString()}`);
  lap('mint');
  await recordDecision(db, {
    requestId: 'bench-floor',
    clientId: req.clientId,
    subjectTokenType: req.subjectTokenType,
    audience: req.audience,
    resources: req.resources,
    sub: subject.user.sub,
    username: subject.user.username,
    ip: '127.0.0.1',
    userAgent: 'bench-floor',
    decision: 'issued', reason: 'issued', explanation: decision.explanation,
    scopesGranted: decision.scopes, ruleIds: decision.ruleIds, jti: minted.jti, exp: minted.exp,
    checks: checks.record,
    durationMs: performance.now() - started,
  });
  lap('audit');
  return minted.jwt;
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
