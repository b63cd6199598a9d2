/**
 * Several workers (`--workers 2`, src/cluster): the real process as `npm start` runs it, one port, one
 * database. Every request here opens its own connection (no keep-alive), so the primary hands consecutive
 * requests to different workers: the playground's sessions must follow a browser from one worker to the next,
 * /metrics must count every worker's exchanges, a worker that dies is replaced, and SIGTERM stops them all.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { createInterface } from 'node:readline';
import { Agent, getGlobalDispatcher, setGlobalDispatcher, type Dispatcher } from 'undici';
import { WORKER_SEMI_SPACE_MIB } from '../src/cluster/index.ts';
import { AdminUi, follow } from './helpers/admin-ui.ts';
import { DEMO_AGENT, signIn } from './helpers/browser.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { exchange } from './helpers/exchange.ts';
import { samples, parseMetrics } from './helpers/metrics.ts';

let database: TestDatabase;
let child: ChildProcess;
let issuer: string;
const logs: string[] = [];
let previous: Dispatcher;

beforeAll(async () => {
  previous = getGlobalDispatcher();
  // no keep-alive: each request a new connection, which the primary gives to the next worker
  setGlobalDispatcher(new Agent({ pipelining: 0 }));
  database = await createTestDatabase('idjag-cluster');
  child = spawn(process.execPath, ['src/main.ts', '--workers', '2', '--port', '0', '--host', '127.0.0.1', '--log-level', 'info', '--database', database.location], {
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  createInterface({ input: child.stderr! }).on('line', (l) => logs.push(`ERR ${l}`));
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (l) => logs.push(l));
  issuer = await new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => {
      const m = /idjag is running at (\S+)/.exec(line);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`exited early with ${code}`)));
  });
});

afterAll(async () => {
  child?.kill('SIGKILL');
  await database?.dispose();
  setGlobalDispatcher(previous);
});

/** A GET on a connection of its own (closed after it): its status; a request unanswered in 3 s fails. */
const onNewConnection = (path: string) => new Promise<number>((resolve, reject) => {
  const req = httpGet(`${issuer}${path}`, { agent: false, headers: { connection: 'close' } }, (res) => {
    res.resume();
    res.on('end', () => resolve(res.statusCode!));
  });
  req.setTimeout(3000, () => req.destroy(new Error('no answer in 3 s')));
  req.on('error', reject);
});

/** The pids whose request log names `path` (pino writes each worker's pid on its lines), from log line `from` on. */
const servedBy = (path: string, from = 0): Set<number> => new Set(logs.slice(from).flatMap((l) => {
  if (!l.startsWith('{')) return [];
  const entry = JSON.parse(l) as { msg?: string; path?: string; pid?: number };
  return entry.msg === 'request' && entry.path === path && entry.pid !== undefined ? [entry.pid] : [];
}));

test('the banner says how many workers serve; consecutive connections reach both', async () => {
  expect(logs.join('\n')).toMatch(/ {2}workers {5}2 processes on one port/);
  for (let i = 0; i < 10; i++) expect(await onNewConnection('/healthz')).toBe(200);
  expect(servedBy('/healthz').size).toBe(2);
});

test('the workers run with a young generation of their own size (short GC pauses)', async () => {
  if (process.platform !== 'linux') return;
  for (let i = 0; i < 10; i++) expect(await onNewConnection('/healthz')).toBe(200);
  const pids = [...servedBy('/healthz')];
  expect(pids).toHaveLength(2);
  for (const pid of pids) {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv).toContain(`--max-semi-space-size=${WORKER_SEMI_SPACE_MIB}`);
  }
});

test('the playground follows a browser from worker to worker: its session is kept by the primary', async () => {
  const ui = new AdminUi(issuer);
  expect((await ui.open('/playground')).html).toContain('Not reached: sign in first.');
  const start = await ui.post('/playground/sign-in');
  expect(start.status).toBe(303);
  const page = await follow(ui.browser, new URL(start.headers.get('location')!, issuer).href, { username: 'alice', password: 'alice' });
  ui.csrf = /name="_csrf" value="([^"]+)"/.exec(page.html)![1]!;
  expect(page.html).toMatch(/data-signed-in-as[^>]*>alice</);
  const exchanged = await ui.submit('/playground/exchange', { audience: `${issuer}/demo/as`, resource: `${issuer}/demo/mcp`, scope: ['todos.read'] });
  expect(exchanged.html).toContain('data-decision="issued"');
  // the steps were served by both workers, and each found the state the other left
  expect(new Set([...servedBy('/playground'), ...servedBy('/playground/sign-in'), ...servedBy('/playground/callback'), ...servedBy('/playground/exchange')]).size).toBe(2);
});

test('/metrics counts the exchanges of every worker, whichever answers the scrape', async () => {
  const issuedBefore = async () => samples(parseMetrics(await (await fetch(`${issuer}/metrics`)).text()), 'idjag_token_exchanges_total')
    .filter((s) => s.labels.decision === 'issued').reduce((n, s) => n + s.value, 0);
  const before = await issuedBefore();
  const { tokens } = await signIn(issuer, { username: 'alice', password: 'alice' });
  for (let i = 0; i < 6; i++) expect((await exchange(issuer, String(tokens.id_token), {}, DEMO_AGENT)).status).toBe(200);
  expect(servedBy('/token').size).toBe(2);
  for (let i = 0; i < 4; i++) expect(await issuedBefore()).toBe(before + 6);
});

test('a worker that dies is replaced; the service goes on', async () => {
  const pids = [...servedBy('/healthz')];
  process.kill(pids[0]!, 'SIGKILL');
  const deadline = Date.now() + 20_000;
  const seen = logs.length;
  // the replacement serves: requests reach two live workers again, the dead one never
  const since = () => servedBy('/healthz', seen);
  let failed = 0;
  while (since().size < 2 && Date.now() < deadline) {
    // a connection the primary handed to the worker as it died is lost (reset, or never answered: node:cluster
    // does not hand it to another worker), as with any crash: that one request fails
    const status = await onNewConnection('/healthz').catch(() => 0);
    if (status !== 200) failed++;
    await new Promise((r) => setTimeout(r, 50));
  }
  expect(failed).toBeLessThanOrEqual(2);
  expect(logs.some((l) => l.includes('worker stopped unexpectedly; restarting it'))).toBe(true);
  expect(since().size).toBe(2);
  expect(since().has(pids[0]!)).toBe(false);
});

test('SIGTERM stops every worker, then the primary, cleanly', async () => {
  const workers = [...servedBy('/healthz')];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  expect(await exited).toBe(0);
  for (const pid of workers) expect(() => process.kill(pid, 0)).toThrow();
});
