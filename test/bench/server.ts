/**
 * The benchmark's server process: a real idjag on an ephemeral port over the given database (a SQLite file or a
 * postgres:// URL), silent. `--issuer` sets the issuer (a second node on the same PostgreSQL database takes
 * the first one's, so ID Tokens from either are valid at both); `url` is always this process's own address.
 * Prints one JSON line `{"url": ..., "issuer": ..., "pid": ...}` once it listens; SIGTERM closes it. Spawned
 * with an IPC channel, it answers the message 'cpu' with its CPU time so far, 'memory' with its
 * process.memoryUsage(), and 'memory-gc' with the same after a full GC (when started with --expose-gc).
 *
 *   node test/bench/server.ts --database /tmp/x/idjag.db [--issuer http://127.0.0.1:port]
 */
import type { AddressInfo } from 'node:net';
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/index.ts';
import { startIdjag } from '../../src/main.ts';

const { values } = parseArgs({ options: { database: { type: 'string' }, issuer: { type: 'string' } }, strict: true });
if (!values.database) {
  console.error('usage: server.ts --database <file or postgres:// URL> [--issuer <url>]');
  process.exit(2);
}

// The default configuration, rate limits included (the load spreads over many users, as an enterprise's does).
const config = loadConfig(values.issuer ? ['--issuer', values.issuer] : [], {}, { port: 0, host: '127.0.0.1', database: values.database, logLevel: 'silent', seedOnEmpty: false });
const idjag = await startIdjag(config, { log: pino({ level: 'silent' }) });
const url = `http://127.0.0.1:${(idjag.server.address() as AddressInfo).port}`;
process.stdout.write(`${JSON.stringify({ url, issuer: idjag.issuer, pid: process.pid })}\n`);

// The parent asks for this process's CPU time (all threads, µs) and time in GC pauses (µs) around each
// measured run, over the IPC channel.
let gcUs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcUs += e.duration * 1000;
}).observe({ entryTypes: ['gc'] });
process.on('message', (m: unknown) => {
  if (m === 'cpu') {
    const { user, system } = process.cpuUsage();
    process.send?.({ cpuUs: user + system, gcUs });
  } else if (m === 'memory' || m === 'memory-gc') {
    const gc = m === 'memory-gc' ? (globalThis as { gc?: () => void }).gc : undefined;
    gc?.();
    const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage();
    process.send?.({ rss, heapUsed, heapTotal, external, arrayBuffers, gc: gc !== undefined });
  }
});

const stop = () => {
  idjag.close().then(() => process.exit(0), (err: unknown) => {
    console.error('bench server: close failed', err);
    process.exit(1);
  });
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
