/**
 * What the benchmark (run.ts) and the soak (soak.ts) share: the server child process and its IPC questions,
 * reading a child's one-line JSON result, percentiles.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(HERE, '..', '..');
export const OUT = join(ROOT, 'test-output');

/** The first line a child prints on stdout (its result); rejects if it exits first. */
export function firstLine(child: ChildProcess, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const fail = (why: string) => reject(new Error(`${what}: ${why}`));
    child.once('error', (err) => fail(err.message));
    child.once('exit', (code, signal) => fail(`exited (${signal ?? code}) before printing its result`));
    lines.once('line', (line) => {
      lines.close();
      resolve(line);
    });
  });
}

/** The child's process.memoryUsage(), bytes; `gc` tells whether a full GC ran just before (needs --expose-gc). */
export interface ServerMemory {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  gc: boolean;
}

export interface ServerHandle {
  url: string;
  issuer: string;
  /** the server's processes serving requests (src/cluster) */
  workers: number;
  child: ChildProcess;
  /** the server process's CPU time so far (user + system, every thread) and its time in GC pauses, µs */
  cpu(): Promise<{ cpuUs: number; gcUs: number }>;
  /** the server process's memory; with `gc`, after a full garbage collection when the child allows it */
  memory(gc?: boolean): Promise<ServerMemory>;
  stop(): Promise<void>;
}

/**
 * Starts test/bench/server.ts over `database` (a SQLite file or a postgres:// URL) with the given node flags,
 * the given issuer if any (a second node on the same database) and workers (the default's otherwise);
 * resolves once it listens.
 */
export async function startServer(database: string, nodeArgs: string[], issuerOverride?: string, workers?: string): Promise<ServerHandle> {
  const child = spawn(process.execPath, [...nodeArgs, join(HERE, 'server.ts'), '--database', database, ...(issuerOverride ? ['--issuer', issuerOverride] : []),
    ...(workers ? ['--workers', workers] : [])], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  const line = await firstLine(child, 'bench server');
  const { url, issuer, workers: count } = JSON.parse(line) as { url: string; issuer: string; workers: number };
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // One question at a time over the channel: each answer is the next message.
  let queue: Promise<unknown> = Promise.resolve();
  const ask = <T>(question: string, gone: T): Promise<T> => {
    const answer = queue.then(() => new Promise<T>((resolve) => {
      // `gone` when the server is gone (the run then shows errors and the bench fails), never a hang
      if (!child.connected) return resolve(gone);
      const onMessage = (m: unknown) => {
        clearTimeout(timer);
        resolve(m as T);
      };
      const timer = setTimeout(() => {
        child.off('message', onMessage);
        resolve(gone);
      }, 5000);
      child.once('message', onMessage);
      child.send(question, (err) => {
        if (err) {
          clearTimeout(timer);
          child.off('message', onMessage);
          resolve(gone);
        }
      });
    }));
    queue = answer;
    return answer;
  };
  return {
    url, issuer, child, workers: count,
    cpu: () => ask('cpu', { cpuUs: NaN, gcUs: NaN }),
    memory: (gc = false) => ask(gc ? 'memory-gc' : 'memory', { rss: NaN, heapUsed: NaN, heapTotal: NaN, external: NaN, arrayBuffers: NaN, gc: false }),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Nearest-rank percentile of an ascending array. */
export const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;

export const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** A text table: first column left-aligned, the others right-aligned. */
export function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(rows[0]!), line(widths.map((w) => '-'.repeat(w))), ...rows.slice(1).map(line)];
}
