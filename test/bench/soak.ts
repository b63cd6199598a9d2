/**
 * `npm run bench -- --soak`: a minute (--duration) of mixed traffic at a fixed concurrency (--connections,
 * 16 by default) against idjag in a child process, from this one:
 *
 * - login: the whole sign-in through the real login form, as test/helpers/browser.ts walks it (authorization
 *   request with PKCE, login page, form post with its CSRF token, redirects, code exchange at /token), for
 *   alice and bob in turn; each login's ID Token replaces that user's token for the exchanges that follow;
 * - exchange allowed: alice's ID Token for an ID-JAG (200), or one of POOL users in her groups (their ID Tokens
 *   signed with the IdP's key like hers), in turn;
 * - exchange denied: bob's (sales) ID Token, or one of POOL users like him, refused with 400 invalid_target;
 * - admin reads: GET /admin/api/audit?limit=50 and GET /admin/api/rules with a client_credentials token of
 *   idjag-admin-cli (scope admin), 200.
 *
 * Each client picks the next kind at random by the weights of MIX. Every request is counted by kind and
 * outcome; an unexpected error is anything but the expected answer of its kind (a 5xx, a 429, a socket
 * error or timeout, a 200 for bob ...). Reports per kind the count, rate and p50/p99 latency, the server's
 * RSS at start and end (and its heap after a full GC, the better leak signal), and compares the audit rows
 * written during the soak with the exchanges sent: every exchange is audited, allowed, denied or failed.
 * Table on stdout, JSON in test-output/soak.json. Fails (exit 1) on any unexpected error or when the audit
 * count differs.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { authorize, basic, Browser, DEMO_AGENT, REDIRECT_URI, signIn } from '../helpers/browser.ts';
import { ID_JAG, ID_TOKEN, TOKEN_EXCHANGE } from '../helpers/exchange.ts';
import { addBenchUsers, idTokensLike, openSqlite, prepareDatabase, TODO_AS, TODO_MCP } from './fixtures.ts';
import { fmt, OUT, percentile, startServer, table, type ServerHandle, type ServerMemory } from './harness.ts';

/** users like alice, and like bob, whose exchanges the soak sends in turn */
const POOL = 300;

type Kind = 'login' | 'exchange allowed' | 'exchange denied' | 'admin audit' | 'admin rules';

/**
 * Relative weights of the kinds: mostly exchanges, as in production. Logins are few by count but not by
 * cost: each checks a password with scrypt (N=2^15, ~100 ms of CPU on a 2-core machine, more when it is busy,
 * and 32 MiB while it runs), so one login in 200 requests already takes a good part of the server's CPU.
 */
const MIX: [Kind, number][] = [['login', 1], ['exchange allowed', 110], ['exchange denied', 50], ['admin audit', 21], ['admin rules', 18]];
const EXPECTED: Record<Kind, string> = {
  login: 'login form → code → 200 with an ID Token',
  'exchange allowed': 'alice: 200, an ID-JAG',
  'exchange denied': 'bob: 400 invalid_target',
  'admin audit': 'GET /admin/api/audit?limit=50: 200',
  'admin rules': 'GET /admin/api/rules: 200',
};
const TIMEOUT_MS = 10_000;
const ADMIN_CLIENT = { id: 'idjag-admin-cli', secret: 'idjag-admin-cli-secret' };
const WINDOW_S = 10;

export interface SoakOptions {
  seconds: number;
  concurrency: number;
  /** node flags for the server child */
  nodeArgs: string[];
}

interface Outcome { ok: boolean; outcome: string; httpRequests: number }

interface KindStats {
  count: number;
  ok: number;
  unexpected: number;
  httpRequests: number;
  latencies: number[];
  /** every answer, by status (and error code) or exception */
  outcomes: Map<string, number>;
  /** the unexpected ones only */
  errors: Map<string, number>;
}

/** A Browser whose every request gives up after TIMEOUT_MS: a hung hop is an error, not a hung soak. */
class TimedBrowser extends Browser {
  override fetch(url: string, init: RequestInit = {}): Promise<Response> {
    return super.fetch(url, { ...init, signal: AbortSignal.timeout(TIMEOUT_MS) });
  }
}

const mib = (bytes: number) => bytes / 2 ** 20;

/** What an exception says, without the parts that differ per request (ports, interaction ids, codes). */
function describe(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return `timeout (${TIMEOUT_MS / 1000} s)`;
  const cause = e.cause?.code ?? e.cause?.message;
  return `${e.message ?? String(err)}${cause ? ` (${cause})` : ''}`
    .replace(/https?:\/\/127\.0\.0\.1:\d+/g, '')
    .replace(/\/interaction\/[^/\s]+/g, '/interaction/:uid')
    .replace(/\?\S*/g, '?…')
    .slice(0, 160);
}

export async function runSoak(o: SoakOptions): Promise<boolean> {
  const startedAt = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'idjag-soak-'));
  const dbFile = join(dir, 'idjag.db');
  mkdirSync(OUT, { recursive: true });
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version, loadavg: loadavg().map((l) => Math.round(l * 100) / 100) };
  console.error(`idjag soak: ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}; ${o.seconds} s at ${o.concurrency} concurrent clients`);

  await prepareDatabase(dbFile);
  const auditRows = async () => {
    const database = openSqlite(dbFile);
    try {
      return (database.sqlite.prepare('select count(*) as n from audit_log').get() as { n: number }).n;
    } finally {
      await database.close();
    }
  };

  let server: ServerHandle | undefined;
  try {
    // --expose-gc: the heap after a full GC, at start and at end, tells a leak from a heap that has not shrunk yet
    server = await startServer(dbFile, [...o.nodeArgs, '--expose-gc']);
    const base = server.url;

    // ------------------------------------------------------------------------------------------------------
    // the clients' state: each user's latest ID Token (a login replaces it), the admin API token

    const idTokens: Record<'alice' | 'bob', string> = {
      alice: String((await signIn(base, { username: 'alice', password: 'alice' })).tokens.id_token ?? ''),
      bob: String((await signIn(base, { username: 'bob', password: 'bob' })).tokens.id_token ?? ''),
    };
    if (!idTokens.alice || !idTokens.bob) throw new Error('sign-in returned no ID Token');
    // The exchanges of each kind spread over POOL users like alice (or bob), as an enterprise's traffic does:
    // the default per-user limit (300 a minute) would refuse one user sending a soak's worth.
    const pools = await (async () => {
      const database = openSqlite(dbFile);
      try {
        return {
          alice: await idTokensLike(database.db, idTokens.alice, await addBenchUsers(database.db, POOL, 'alice')),
          bob: await idTokensLike(database.db, idTokens.bob, await addBenchUsers(database.db, POOL, 'bob')),
        };
      } finally {
        await database.close();
      }
    })();
    const turn = { alice: 0, bob: 0 };
    // alice and bob themselves are in the turn too, with the ID Token of their latest login
    const nextToken = (user: 'alice' | 'bob') => {
      const i = turn[user]++ % (POOL + 1);
      return i === 0 ? idTokens[user] : pools[user][i - 1]!;
    };

    let admin: { token: string; refreshAt: number } | undefined;
    let adminRefresh: Promise<string> | undefined;
    let adminTokens = 0;
    const adminToken = (): Promise<string> => {
      if (admin && performance.now() < admin.refreshAt) return Promise.resolve(admin.token);
      adminRefresh ??= (async () => {
        try {
          const res = await fetch(`${base}/token`, {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(ADMIN_CLIENT.id, ADMIN_CLIENT.secret) },
            body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'admin' }),
            signal: AbortSignal.timeout(TIMEOUT_MS),
          });
          const body = await res.json() as { access_token?: string; expires_in?: number };
          if (res.status !== 200 || !body.access_token) throw new Error(`admin token: ${res.status} ${JSON.stringify(body)}`);
          adminTokens++;
          // renewed at half its lifetime, long before it expires
          admin = { token: body.access_token, refreshAt: performance.now() + ((body.expires_in ?? 600) * 1000) / 2 };
          return admin.token;
        } finally {
          adminRefresh = undefined;
        }
      })();
      return adminRefresh;
    };

    // ------------------------------------------------------------------------------------------------------
    // one request of each kind

    let logins = 0;
    let exchangesSent = 0;
    const ops: Record<Kind, () => Promise<Outcome>> = {
      async login() {
        const username = logins++ % 2 ? 'bob' : 'alice';
        const browser = new TimedBrowser();
        // throws on any unexpected page or status along the way (login refused, 5xx, 429 ...)
        const auth = await authorize(base, { username, password: username, browser });
        const res = await fetch(`${base}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(DEMO_AGENT.id, DEMO_AGENT.secret) },
          body: new URLSearchParams({ grant_type: 'authorization_code', code: auth.code, redirect_uri: REDIRECT_URI, code_verifier: auth.verifier }),
          signal: AbortSignal.timeout(TIMEOUT_MS),
        });
        const body = await res.json().catch(() => ({})) as { id_token?: string; error?: string };
        const httpRequests = auth.pages.length + 1;
        if (res.status !== 200 || typeof body.id_token !== 'string') return { ok: false, outcome: `code exchange ${res.status} ${body.error ?? ''}`.trim(), httpRequests };
        idTokens[username] = body.id_token;
        return { ok: true, outcome: '200', httpRequests };
      },
      'exchange allowed': () => exchange('alice', (status, body) => status === 200 && body.issued_token_type === ID_JAG && typeof body.access_token === 'string'),
      'exchange denied': () => exchange('bob', (status, body) => status === 400 && body.error === 'invalid_target'),
      'admin audit': () => adminGet('/admin/api/audit?limit=50', (body) => Array.isArray(body.items)),
      'admin rules': () => adminGet('/admin/api/rules', (body) => Array.isArray(body.items)),
    };
    async function exchange(user: 'alice' | 'bob', expected: (status: number, body: Record<string, unknown>) => boolean): Promise<Outcome> {
      const body = new URLSearchParams({
        grant_type: TOKEN_EXCHANGE, requested_token_type: ID_JAG, subject_token: nextToken(user), subject_token_type: ID_TOKEN,
        audience: TODO_AS, resource: TODO_MCP,
      });
      exchangesSent++;
      const res = await fetch(`${base}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(DEMO_AGENT.id, DEMO_AGENT.secret) },
        body,
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      const answer = await res.json().catch(() => ({})) as Record<string, unknown>;
      const ok = expected(res.status, answer);
      const outcome = res.status === 200 ? (ok || user === 'bob' ? '200' : '200 without an ID-JAG') : `${res.status} ${typeof answer.error === 'string' ? answer.error : ''}`.trim();
      return { ok, outcome, httpRequests: 1 };
    }
    async function adminGet(path: string, expected: (body: Record<string, unknown>) => boolean): Promise<Outcome> {
      const token = await adminToken();
      const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(TIMEOUT_MS) });
      const answer = await res.json().catch(() => ({})) as Record<string, unknown>;
      const ok = res.status === 200 && expected(answer);
      const outcome = res.status === 200 ? (ok ? '200' : '200 without items') : `${res.status} ${typeof answer.error === 'string' ? answer.error : ''}`.trim();
      return { ok, outcome, httpRequests: 1 };
    }

    // One of each by hand first: a wrong setup fails here with the server's words, not as thousands of errors.
    for (const kind of MIX.map(([k]) => k)) {
      const r = await ops[kind]();
      if (!r.ok) throw new Error(`${kind}: expected ${EXPECTED[kind]}, got ${r.outcome}`);
    }

    // ------------------------------------------------------------------------------------------------------
    // the soak

    const stats = Object.fromEntries(MIX.map(([k]) => [k, { count: 0, ok: 0, unexpected: 0, httpRequests: 0, latencies: [], outcomes: new Map(), errors: new Map() }])) as unknown as Record<Kind, KindStats>;
    const windows: { fromS: number; requests: number; unexpected: number; exchanges: number; p99Ms: number; rssMiB: number }[] = [];
    const samples: { atS: number; rssMiB: number; heapUsedMiB: number }[] = [];
    const totalWeight = MIX.reduce((n, [, w]) => n + w, 0);
    const pick = (): Kind => {
      let r = Math.random() * totalWeight;
      for (const [k, w] of MIX) if ((r -= w) < 0) return k;
      return MIX[0]![0];
    };

    const before = await server.memory(false);
    const beforeGc = await server.memory(true);
    const cpuBefore = await server.cpu();
    const auditBefore = await auditRows();
    exchangesSent = 0;
    const parentCpu = process.cpuUsage();
    const t0 = performance.now();
    const deadline = t0 + o.seconds * 1000;
    let current = { requests: 0, unexpected: 0, exchanges: 0, latencies: [] as number[] };

    const client = async () => {
      while (performance.now() < deadline) {
        const kind = pick();
        const s = stats[kind];
        const started = performance.now();
        let r: Outcome;
        try {
          r = await ops[kind]();
        } catch (err) {
          r = { ok: false, outcome: describe(err), httpRequests: 1 };
        }
        const ms = performance.now() - started;
        s.count++;
        s.httpRequests += r.httpRequests;
        s.latencies.push(ms);
        if (r.ok) s.ok++;
        else {
          s.unexpected++;
          s.errors.set(r.outcome, (s.errors.get(r.outcome) ?? 0) + 1);
        }
        s.outcomes.set(r.outcome, (s.outcomes.get(r.outcome) ?? 0) + 1);
        current.requests++;
        current.latencies.push(ms);
        if (!r.ok) current.unexpected++;
        if (kind.startsWith('exchange')) current.exchanges++;
      }
    };
    // every WINDOW_S seconds: the window's rate and p99, and the server's RSS
    const sampler = setInterval(() => {
      const w = current;
      current = { requests: 0, unexpected: 0, exchanges: 0, latencies: [] };
      const atS = (performance.now() - t0) / 1000;
      void server!.memory(false).then((m) => {
        samples.push({ atS: Math.round(atS), rssMiB: Math.round(mib(m.rss) * 10) / 10, heapUsedMiB: Math.round(mib(m.heapUsed) * 10) / 10 });
        w.latencies.sort((a, b) => a - b);
        windows.push({ fromS: Math.round(atS - WINDOW_S), requests: w.requests, unexpected: w.unexpected, exchanges: w.exchanges, p99Ms: Math.round(percentile(w.latencies, 99) * 10) / 10, rssMiB: Math.round(mib(m.rss)) });
        process.stderr.write(`  ${fmt(atS)} s: ${fmt(w.requests / WINDOW_S)} req/s, p99 ${fmt(percentile(w.latencies, 99), 1)} ms, server RSS ${fmt(mib(m.rss))} MiB, unexpected ${w.unexpected}\n`);
      });
    }, WINDOW_S * 1000);
    try {
      await Promise.all(Array.from({ length: o.concurrency }, client));
    } finally {
      clearInterval(sampler);
    }
    const seconds = (performance.now() - t0) / 1000;
    const parentUsed = process.cpuUsage(parentCpu);
    const cpuAfter = await server.cpu();
    const after = await server.memory(false);
    const afterGc = await server.memory(true);
    // the server finishes whatever is in flight and closes the database before the audit rows are counted
    await server.stop();
    const auditAdded = (await auditRows()) - auditBefore;

    // ------------------------------------------------------------------------------------------------------
    // report

    const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;
    const all: KindStats = { count: 0, ok: 0, unexpected: 0, httpRequests: 0, latencies: [], outcomes: new Map(), errors: new Map() };
    for (const [k] of MIX) {
      const s = stats[k];
      s.latencies.sort((a, b) => a - b);
      all.count += s.count;
      all.ok += s.ok;
      all.unexpected += s.unexpected;
      all.httpRequests += s.httpRequests;
      all.latencies = all.latencies.concat(s.latencies);
    }
    all.latencies.sort((a, b) => a - b);
    const summary = (s: KindStats) => ({
      count: s.count,
      perSec: round(s.count / seconds, 1),
      httpRequests: s.httpRequests,
      p50Ms: round(percentile(s.latencies, 50)),
      p99Ms: round(percentile(s.latencies, 99)),
      maxMs: round(s.latencies.at(-1) ?? NaN),
      expected: s.ok,
      unexpected: s.unexpected,
      outcomes: Object.fromEntries(s.outcomes),
      errors: Object.fromEntries(s.errors),
    });
    const kinds = Object.fromEntries(MIX.map(([k]) => [k, summary(stats[k])])) as Record<Kind, ReturnType<typeof summary>>;
    const total = summary(all);
    const exchanges = {
      sent: exchangesSent,
      allowed: stats['exchange allowed'].ok,
      denied: stats['exchange denied'].ok,
      other: stats['exchange allowed'].unexpected + stats['exchange denied'].unexpected,
    };
    const auditOk = auditAdded === exchanges.sent && exchanges.sent === exchanges.allowed + exchanges.denied + exchanges.other;
    const memory = (m: ServerMemory) => ({ rssMiB: round(mib(m.rss), 1), heapUsedMiB: round(mib(m.heapUsed), 1), heapTotalMiB: round(mib(m.heapTotal), 1), externalMiB: round(mib(m.external), 1) });
    const mem = {
      start: memory(before), end: memory(after), startAfterGc: memory(beforeGc), endAfterGc: memory(afterGc), gcExposed: afterGc.gc,
      rssGrowthMiB: round(mib(after.rss - before.rss), 1),
      heapAfterGcGrowthMiB: round(mib(afterGc.heapUsed - beforeGc.heapUsed), 1),
      peakRssMiB: Math.max(round(mib(after.rss), 1), ...samples.map((s) => s.rssMiB)),
      samples,
    };
    const serverCpu = { load: round((cpuAfter.cpuUs - cpuBefore.cpuUs) / 1e6 / seconds), usPerHttpRequest: Math.round((cpuAfter.cpuUs - cpuBefore.cpuUs) / Math.max(1, all.httpRequests)) };
    const loadgenCpuLoad = round((parentUsed.user + parentUsed.system) / 1e6 / seconds);
    const ok = all.unexpected === 0 && auditOk;
    const mixText = MIX.map(([k, w]) => `${k} ${round((w / totalWeight) * 100, 1)}%`).join(', ');

    const rows: string[][] = [
      ['kind', 'expected answer', 'count', 'per s', 'p50 ms', 'p99 ms', 'max ms', 'as expected', 'unexpected'],
      ...MIX.map(([k]) => {
        const r = kinds[k];
        return [k, EXPECTED[k], fmt(r.count), fmt(r.perSec, 1), fmt(r.p50Ms, 1), fmt(r.p99Ms, 1), fmt(r.maxMs, 1), fmt(r.expected), fmt(r.unexpected)];
      }),
      ['all', `${fmt(total.httpRequests)} HTTP requests`, fmt(total.count), fmt(total.perSec, 1), fmt(total.p50Ms, 1), fmt(total.p99Ms, 1), fmt(total.maxMs, 1), fmt(total.expected), fmt(total.unexpected)],
    ];
    const unexpected = MIX.flatMap(([k]) => [...stats[k].errors.entries()].map(([outcome, n]) => `${k}: ${outcome} × ${n}`));
    const rateLimited = MIX.reduce((n, [k]) => n + [...stats[k].errors.entries()].filter(([outcome]) => /\b429\b/.test(outcome)).reduce((m, [, c]) => m + c, 0), 0);
    const out = [
      '',
      `idjag soak — ${fmt(seconds, 1)} s of mixed traffic at ${o.concurrency} concurrent clients; ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}, load avg before ${machine.loadavg.join(' ')}`,
      `mix (picked at random per request): ${mixText}; a login is the whole flow (${fmt(kinds.login.httpRequests / Math.max(1, kinds.login.count), 1)} HTTP requests), its latency is the flow's`,
      '',
      ...table(rows),
      '',
      `server memory: RSS ${fmt(mem.start.rssMiB, 1)} MiB at start, ${fmt(mem.end.rssMiB, 1)} MiB at end (${mem.rssGrowthMiB >= 0 ? '+' : ''}${fmt(mem.rssGrowthMiB, 1)} MiB), peak ${fmt(mem.peakRssMiB, 1)} MiB;`
        + ` heap used after a full GC ${fmt(mem.startAfterGc.heapUsedMiB, 1)} → ${fmt(mem.endAfterGc.heapUsedMiB, 1)} MiB (${mem.heapAfterGcGrowthMiB >= 0 ? '+' : ''}${fmt(mem.heapAfterGcGrowthMiB, 1)} MiB)${mem.gcExposed ? '' : ' (no --expose-gc: without GC)'}`,
      `  RSS every ${WINDOW_S} s (MiB): ${samples.map((s) => fmt(s.rssMiB)).join(', ')}`,
      `server CPU: ${fmt(serverCpu.load, 2)} cores busy, ${fmt(serverCpu.usPerHttpRequest)} µs per HTTP request; the load generator (this process) ${fmt(loadgenCpuLoad, 2)} cores`,
      `per ${WINDOW_S} s window (req/s, p99 ms): ${windows.map((w) => `${fmt(w.requests / WINDOW_S)}/${fmt(w.p99Ms, 0)}`).join(', ')}`,
      `audit: ${fmt(auditAdded)} rows added during the soak; ${fmt(exchanges.sent)} exchanges sent = ${fmt(exchanges.allowed)} allowed + ${fmt(exchanges.denied)} denied`
        + ` + ${fmt(exchanges.other)} other: ${auditOk ? 'EQUAL' : 'DIFFERS'}`,
      ...(rateLimited ? [`note: ${fmt(rateLimited)} answers were 429 (rate limited): the server throttles this traffic`] : []),
      '',
      unexpected.length ? `FAILED: ${fmt(all.unexpected)} unexpected answers or errors: ${unexpected.join('; ')}` : 'no unexpected answers or errors.',
      ...(auditOk ? [] : ['FAILED: the audit log does not hold one row per exchange sent']),
      `admin tokens issued: ${adminTokens}; total ${fmt((Date.now() - startedAt) / 1000, 1)} s; JSON in test-output/soak.json`,
      '',
    ];
    console.log(out.join('\n'));
    writeFileSync(join(OUT, 'soak.json'), `${JSON.stringify({
      at: new Date(startedAt).toISOString(),
      machine: { ...machine, loadavgAfter: loadavg().map((l) => Math.round(l * 100) / 100) },
      settings: { seconds: o.seconds, concurrency: o.concurrency, mix: Object.fromEntries(MIX), timeoutMs: TIMEOUT_MS },
      seconds,
      kinds,
      total,
      windows,
      memory: mem,
      serverCpu,
      loadgenCpuLoad,
      audit: { rowsAdded: auditAdded, exchanges, equal: auditOk },
      rateLimited,
      ok,
    }, null, 2)}\n`);
    return ok;
  } finally {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
