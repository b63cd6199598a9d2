import cluster, { type Worker } from 'node:cluster';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { AggregatorRegistry, type Registry } from 'prom-client';

/**
 * Several workers on one machine (node:cluster): one process per core, all listening on the same port (the
 * primary hands each new connection to the next worker), all on the same database. Everything a worker keeps
 * in memory is either rebuilt from the database by each (keys, clients) or reconciled through it (rate
 * limits), except two things that live in the primary and are reached over the workers' IPC channel: the
 * playground's sessions (which hold tokens, so never the database) and the metrics, which the primary sums.
 *
 * The first worker starts alone (it migrates, seeds and makes keys); the others start once it serves.
 */

/** This process's index among the workers (0 for the first, also when it is restarted), or undefined: no cluster. */
export const workerIndex = (): number | undefined => (cluster.isWorker && process.env.IDJAG_WORKER !== undefined ? Number(process.env.IDJAG_WORKER) : undefined);

// ---------------------------------------------------------------------------------------------------------
// IPC: a worker asks, the primary answers

interface Ask { idjag: 'ask'; seq: number; kind: string; args: unknown[] }
interface Answer { idjag: 'answer'; seq: number; value?: unknown; error?: string }
interface Ready { idjag: 'ready'; banner: string }
type Message = Ask | Answer | Ready;

const isMessage = (m: unknown): m is Message => typeof m === 'object' && m !== null && typeof (m as { idjag?: unknown }).idjag === 'string';

const ASK_TIMEOUT_MS = 5000;
let seq = 0;
const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

if (cluster.isWorker) {
  process.on('message', (m: unknown) => {
    if (!isMessage(m) || m.idjag !== 'answer') return;
    const w = waiting.get(m.seq);
    if (!w) return;
    waiting.delete(m.seq);
    clearTimeout(w.timer);
    if (m.error !== undefined) w.reject(new Error(m.error));
    else w.resolve(m.value);
  });
}

function ask<T>(kind: string, ...args: unknown[]): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const n = ++seq;
    const timer = setTimeout(() => {
      waiting.delete(n);
      reject(new Error(`the cluster's primary did not answer ${kind} within ${ASK_TIMEOUT_MS} ms`));
    }, ASK_TIMEOUT_MS);
    timer.unref();
    waiting.set(n, { resolve: resolve as (v: unknown) => void, reject, timer });
    process.send!({ idjag: 'ask', seq: n, kind, args } satisfies Ask);
  });
}

/** Tells the primary this worker serves; the first one's banner is what the primary prints. */
export function reportReady(banner: string): void {
  process.send?.({ idjag: 'ready', banner } satisfies Ready);
}

// ---------------------------------------------------------------------------------------------------------
// What the workers share through the primary

/** Where the playground keeps a browser's state (src/playground/session.ts). */
export interface SessionStore<T> {
  get(id: string): Promise<T | undefined>;
  set(id: string, value: T): Promise<void>;
  delete(id: string): Promise<void>;
}

export interface SessionBounds {
  max: number;
  ttlMs: number;
}

/** In this process: a bounded LRU, entries forgotten `ttlMs` after their last use. */
export function localSessions<T extends object>(bounds: SessionBounds): SessionStore<T> {
  const lru = new LRUCache<string, T>({ max: bounds.max, ttl: bounds.ttlMs, updateAgeOnGet: true });
  return {
    get: async (id) => lru.get(id),
    set: async (id, value) => void lru.set(id, value),
    delete: async (id) => void lru.delete(id),
  };
}

/** In a worker: the primary's store, so a browser's next request may reach any worker. */
export function primarySessions<T>(): SessionStore<T> {
  return {
    get: (id) => ask<T | undefined>('session.get', id),
    set: (id, value) => ask<void>('session.set', id, value),
    delete: (id) => ask<void>('session.delete', id),
  };
}

/** In a worker: every worker's metrics, summed by the primary (prom-client's AggregatorRegistry). */
export function clusterMetrics(registry: Registry): () => Promise<string> {
  AggregatorRegistry.setRegistries([registry]);
  // constructed once in the worker so prom-client answers the primary's requests for this worker's metrics
  new AggregatorRegistry();
  return () => ask<string>('metrics');
}

// ---------------------------------------------------------------------------------------------------------
// The primary

export interface PrimaryOptions {
  workers: number;
  log: Logger;
  /** the playground's bounds (the same as a single process's) */
  sessions: SessionBounds;
  /** the banner of the first worker, with a line about the workers added */
  print: (banner: string) => void;
}

/**
 * Each worker's young generation, in MiB per semi-space. V8 sizes it by the machine's memory and grows it under
 * load (to 128 MiB of new space on a 24 GiB machine), and a scavenge stops the worker for as long as copying what
 * survives takes: under load 10-30 ms, during which every request in flight on that worker waits. At 16 MiB
 * the pauses are about 4 ms, the time spent in GC overall within 10% of the default's (measured with the benchmark's exchange at
 * 32 connections: p99 ÷ p50 from 3.4-3.9 down to 2.8-3.0). A `--max-semi-space-size` given to node (on its
 * command line or in NODE_OPTIONS) wins.
 */
export const WORKER_SEMI_SPACE_MIB = 16;

/** The workers' node flags: the primary's own, and the young generation's size unless one is given. */
export function workerExecArgv(execArgv: readonly string[], nodeOptions = ''): string[] {
  const given = [...execArgv, ...nodeOptions.split(/\s+/)].some((a) => /^--max[-_]semi[-_]space[-_]size(=|$)/.test(a));
  return given ? [...execArgv] : [...execArgv, `--max-semi-space-size=${WORKER_SEMI_SPACE_MIB}`];
}

/** Restarting a worker that died: not sooner than this, so a crash loop does not spin. */
const RESTART_DELAY_MS = 1000;

/**
 * Forks the workers and looks after them: restarts one that dies (a worker that dies before it ever served
 * stops the whole cluster instead: a wrong setting or a port in use would only die again), forwards SIGTERM and
 * SIGINT to them and exits once they all have, answers their questions. Resolves when the cluster has stopped.
 */
export function runPrimary(o: PrimaryOptions): Promise<number> {
  const sessions = localSessions<object>(o.sessions);
  const aggregator = new AggregatorRegistry();
  const indexOf = new Map<Worker, number>();
  const everReady = new Set<number>();
  let stopping = false;
  let printed = false;
  let firstBanner: string | undefined;
  let exitCode = 0;
  cluster.setupPrimary({ execArgv: workerExecArgv(cluster.settings.execArgv ?? process.execArgv, process.env.NODE_OPTIONS) });

  const answer = async (kind: string, args: unknown[]): Promise<unknown> => {
    switch (kind) {
      case 'session.get': return sessions.get(String(args[0]));
      case 'session.set': return sessions.set(String(args[0]), args[1] as object);
      case 'session.delete': return sessions.delete(String(args[0]));
      case 'metrics': return aggregator.clusterMetrics();
      default: throw new Error(`unknown question ${kind}`);
    }
  };

  const fork = (index: number): Worker => {
    const worker = cluster.fork({ IDJAG_WORKER: String(index) });
    indexOf.set(worker, index);
    worker.on('message', (m: unknown) => {
      if (!isMessage(m)) return;
      if (m.idjag === 'ready') {
        o.log.info({ worker: index, workerPid: worker.process.pid }, 'worker serving');
        const first = !everReady.has(index);
        everReady.add(index);
        if (index === 0 && first) {
          firstBanner = m.banner;
          for (let i = 1; i < o.workers; i++) fork(i);
        }
        if (!printed && firstBanner !== undefined && everReady.size === o.workers) {
          printed = true;
          o.print(firstBanner);
        }
      } else if (m.idjag === 'ask') {
        answer(m.kind, m.args).then(
          (value) => worker.isConnected() && worker.send({ idjag: 'answer', seq: m.seq, value } satisfies Answer),
          (err: unknown) => worker.isConnected() && worker.send({ idjag: 'answer', seq: m.seq, error: err instanceof Error ? err.message : String(err) } satisfies Answer),
        );
      }
    });
    return worker;
  };

  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      o.log.info({ signal, workers: Object.keys(cluster.workers ?? {}).length }, 'shutting down the workers');
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));

    cluster.on('exit', (worker, code, signal) => {
      const index = indexOf.get(worker) ?? -1;
      indexOf.delete(worker);
      if (!stopping) {
        if (!everReady.has(index)) {
          o.log.error({ worker: index, code, signal }, 'a worker stopped before it could serve; stopping the cluster');
          exitCode = 1;
          stop('SIGTERM');
        } else {
          o.log.error({ worker: index, code, signal }, `worker stopped unexpectedly; restarting it in ${RESTART_DELAY_MS} ms`);
          setTimeout(() => !stopping && fork(index), RESTART_DELAY_MS);
        }
      } else if (code !== 0 && code !== null) {
        exitCode = 1;
      }
      if (stopping && Object.keys(cluster.workers ?? {}).length === 0) resolve(exitCode);
    });

    fork(0);
  });
}
