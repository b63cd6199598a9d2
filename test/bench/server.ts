/**
 * The benchmark's server process: a real idjag on an ephemeral port over the given database (a SQLite file or a
 * postgres:// URL), silent, in the default configuration, so as many workers as `npm start` runs (src/cluster:
 * one per core up to four; `--workers` to choose). `--issuer` sets the issuer (a second node on the same
 * PostgreSQL database takes the first one's, so ID Tokens from either are valid at both); `url` is always this
 * process's own address. Prints one JSON line `{"url": ..., "issuer": ..., "pid": ..., "workers": ...}` once
 * every worker serves; SIGTERM closes it.
 *
 * Spawned with an IPC channel, it answers the message 'cpu' with the CPU time so far and the time in GC pauses
 * of all its processes (the primary and every worker, all threads), 'memory' with their memory (summed), and
 * 'memory-gc' with the same after a full GC in each (when started with --expose-gc).
 *
 *   node test/bench/server.ts --database /tmp/x/idjag.db [--issuer http://127.0.0.1:port] [--workers n]
 */
import cluster, { type Worker } from 'node:cluster';
import type { AddressInfo } from 'node:net';
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { reportReady, runPrimary } from '../../src/cluster/index.ts';
import { loadConfig, workerCount } from '../../src/config/index.ts';
import { PLAYGROUND_SESSIONS, startIdjag, workerServices } from '../../src/main.ts';

const { values } = parseArgs({ options: { database: { type: 'string' }, issuer: { type: 'string' }, workers: { type: 'string' } }, strict: true });
if (!values.database) {
  console.error('usage: server.ts --database <file or postgres:// URL> [--issuer <url>] [--workers n]');
  process.exit(2);
}

// The default configuration, rate limits included (the load spreads over many users, as an enterprise's does).
const config = loadConfig([...(values.issuer ? ['--issuer', values.issuer] : []), ...(values.workers ? ['--workers', values.workers] : [])], {},
  { port: 0, host: '127.0.0.1', database: values.database, logLevel: 'silent', seedOnEmpty: false });
const workers = workerCount(config);

interface Usage { cpuUs: number; gcUs: number }
interface Memory { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number; gc: boolean }

// this process's own GC pauses (µs), whatever its role
let gcUs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcUs += e.duration * 1000;
}).observe({ entryTypes: ['gc'] });

const usage = (): Usage => {
  const { user, system } = process.cpuUsage();
  return { cpuUs: user + system, gcUs };
};
const memory = (gc: boolean): Memory => {
  const collect = gc ? (globalThis as { gc?: () => void }).gc : undefined;
  collect?.();
  const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage();
  return { rss, heapUsed, heapTotal, external, arrayBuffers, gc: collect !== undefined };
};
const answer = (question: unknown) => (question === 'cpu' ? usage() : memory(question === 'memory-gc'));

if (workers > 1 && cluster.isPrimary) {
  // Each worker writes its own CPU profile (named by its pid), not all into the one name given to this process.
  cluster.setupPrimary({ execArgv: process.execArgv.filter((a) => !a.startsWith('--cpu-prof-name')) });
  const ask = (worker: Worker, question: unknown) => new Promise<unknown>((resolve) => {
    const onMessage = (m: { bench?: unknown }) => {
      if (m?.bench === undefined) return;
      worker.off('message', onMessage);
      resolve(m.bench);
    };
    worker.on('message', onMessage);
    worker.send({ bench: question });
  });
  process.on('message', async (question: unknown) => {
    const all = [answer(question), ...await Promise.all(Object.values(cluster.workers ?? {}).map((w) => ask(w!, question)))] as (Usage | Memory)[];
    const sum = (key: string) => all.reduce((n, a) => n + ((a as unknown as Record<string, number>)[key] ?? 0), 0);
    process.send?.(question === 'cpu' ? { cpuUs: sum('cpuUs'), gcUs: sum('gcUs') }
      : { rss: sum('rss'), heapUsed: sum('heapUsed'), heapTotal: sum('heapTotal'), external: sum('external'), arrayBuffers: sum('arrayBuffers'), gc: (all as Memory[]).every((m) => m.gc) });
  });
  const code = await runPrimary({
    workers, log: pino({ level: 'silent' }), sessions: PLAYGROUND_SESSIONS,
    // the first worker's "banner" is its address (below)
    print: (line) => process.stdout.write(`${JSON.stringify({ ...JSON.parse(line) as object, pid: process.pid, workers })}\n`),
  });
  process.exit(code);
}

const worker = workerServices();
const index = worker?.index;
const idjag = await startIdjag(config, { log: pino({ level: 'silent' }), worker });
const address = { url: `http://127.0.0.1:${(idjag.server.address() as AddressInfo).port}`, issuer: idjag.issuer };
if (index === undefined) {
  process.stdout.write(`${JSON.stringify({ ...address, pid: process.pid, workers: 1 })}\n`);
  process.on('message', (question: unknown) => process.send?.(answer(question)));
} else {
  process.on('message', (m: { bench?: unknown }) => {
    if (m?.bench !== undefined) process.send?.({ bench: answer(m.bench) });
  });
  reportReady(JSON.stringify(address));
}

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  idjag.close().then(() => process.exit(0), (err: unknown) => {
    console.error('bench server: close failed', err);
    process.exit(1);
  });
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (index !== undefined) process.on('disconnect', stop);
