import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import SQLite from 'better-sqlite3';

/**
 * WAL checkpoints on a thread of their own.
 *
 * In WAL mode every commit appends pages to the `-wal` file, and a checkpoint copies them back into the
 * database file (and syncs both). By default the connection whose commit takes the WAL past 1,000 pages runs the
 * checkpoint there and then, inside that commit's call: with better-sqlite3, on the event loop. Under load (two
 * workers, 32 connections) one audit commit in fifteen ran one, for 3-10 ms, and a checkpoint that cannot finish
 * (another process reading an older snapshot) is tried again on the next commit, and the next.
 *
 * So a serving connection does not checkpoint until its WAL is far larger than this thread lets it grow
 * (BACKSTOP_PAGES, in case the thread is gone), and this thread, with a connection of its own to the same
 * files, runs a PASSIVE checkpoint of each every INTERVAL_MS. PASSIVE never waits for readers or writers: it
 * copies what no reader still needs, and the writer that next finds the whole WAL copied starts it over from the
 * beginning, so its size stays bounded. Several processes on one database (the workers) each run one; a
 * checkpoint that finds another under way skips its turn.
 */

/** Pages of WAL after which a serving connection checkpoints itself after all (SQLite's default is 1,000). */
export const BACKSTOP_PAGES = 20_000;
/** Between two checkpoints of the thread: at the exchange's full rate the WAL grows by a few MB per second. */
export const INTERVAL_MS = 200;

interface Job { idjagCheckpointer: true; files: { schema: string; path: string }[]; intervalMs: number }

export interface Checkpointer {
  /** stops the thread after its last checkpoint; resolves once it has closed its connection */
  stop(): Promise<void>;
}

/**
 * Starts the thread for a SQLite connection whose databases (`main` and the attached ones in `files`) live in
 * those files, and turns the connection's own checkpoints into a backstop. If the thread fails, the connection
 * goes back to checkpointing as SQLite does by default.
 */
export function startCheckpointer(sqlite: SQLite.Database, files: { schema: string; path: string }[], intervalMs = INTERVAL_MS): Checkpointer {
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { idjagCheckpointer: true, files, intervalMs } satisfies Job });
  // it must not keep a process alive that has nothing else to do
  worker.unref();
  sqlite.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`);
  let stopped = false;
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  worker.once('error', () => {
    if (!stopped && sqlite.open) sqlite.pragma('wal_autocheckpoint = 1000');
  });
  return {
    async stop() {
      if (stopped) return exited;
      stopped = true;
      // waited for now: keeps the process up until the thread has closed its connection
      worker.ref();
      worker.postMessage('stop');
      return exited;
    },
  };
}

/** The thread: one connection, a PASSIVE checkpoint of each file in turn, until told to stop. */
function runCheckpoints(job: Job): void {
  const sqlite = new SQLite(job.files[0]!.path);
  for (const { schema, path } of job.files.slice(1)) sqlite.prepare(`attach database ? as ${schema}`).run(path);
  const checkpoints = job.files.map(({ schema }) => {
    // the syncs a checkpoint makes, as the serving connections would have made them
    sqlite.pragma(`${schema}.synchronous = NORMAL`);
    return sqlite.prepare(`pragma ${schema}.wal_checkpoint(PASSIVE)`);
  });
  const checkpointAll = () => {
    for (const c of checkpoints) c.get();
  };
  const timer = setInterval(checkpointAll, job.intervalMs);
  parentPort!.once('message', () => {
    clearInterval(timer);
    checkpointAll();
    sqlite.close();
    parentPort!.close();
  });
}

if (!isMainThread && (workerData as Partial<Job> | null)?.idjagCheckpointer) runCheckpoints(workerData as Job);
