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
 * copies what no reader still needs. But the WAL only starts over from its beginning when a writer finds all of
 * it copied, and under steady writes from several workers some commit always lands between a checkpoint's end
 * and the next write: measured, the audit file's WAL grew by 3 MiB a second without end. So once the WAL holds
 * RESTART_PAGES, the thread runs a RESTART checkpoint instead: it holds new writers off (a few ms: PASSIVE has
 * copied nearly everything already) until the whole WAL is copied and no reader needs it, so the next commit
 * starts it over. Several processes on one database (the workers) each run a thread; a checkpoint that finds
 * another under way skips its turn.
 */

/** Pages of WAL after which a serving connection checkpoints itself after all (SQLite's default is 1,000). */
export const BACKSTOP_PAGES = 20_000;
/** Between two checkpoints of the thread: at the exchange's full rate the WAL grows by a few MB per second. */
export const INTERVAL_MS = 200;
/** WAL pages (4 KiB) from which the thread makes the WAL start over: a file of about 16 MiB at most. */
export const RESTART_PAGES = 4000;
/** How long the thread's RESTART waits for a writer to finish or a reader to move on; past it, next turn. */
const RESTART_WAIT_MS = 1000;

interface Job { idjagCheckpointer: true; files: { schema: string; path: string }[]; intervalMs: number; restartPages: number }

export interface Checkpointer {
  /** stops the thread after its last checkpoint; resolves once it has closed its connection */
  stop(): Promise<void>;
}

/**
 * Starts the thread for a SQLite connection whose databases (`main` and the attached ones in `files`) live in
 * those files, and turns the connection's own checkpoints into a backstop. If the thread fails, the connection
 * goes back to checkpointing as SQLite does by default (the thread fails only if it cannot open the files).
 */
export function startCheckpointer(sqlite: SQLite.Database, files: { schema: string; path: string }[],
  o: { intervalMs?: number; restartPages?: number } = {}): Checkpointer {
  const job: Job = {
    idjagCheckpointer: true, files, intervalMs: o.intervalMs ?? INTERVAL_MS, restartPages: o.restartPages ?? RESTART_PAGES,
  };
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: job });
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

/** The thread: one connection, a checkpoint of each file in turn every interval, until told to stop. */
function runCheckpoints(job: Job): void {
  const sqlite = new SQLite(job.files[0]!.path);
  for (const { schema, path } of job.files.slice(1)) sqlite.prepare(`attach database ? as ${schema}`).run(path);
  sqlite.pragma(`busy_timeout = ${RESTART_WAIT_MS}`);
  const checkpoints = job.files.map(({ schema }) => {
    // the syncs a checkpoint makes, as the serving connections would have made them
    sqlite.pragma(`${schema}.synchronous = NORMAL`);
    return {
      passive: sqlite.prepare(`pragma ${schema}.wal_checkpoint(PASSIVE)`),
      restart: sqlite.prepare(`pragma ${schema}.wal_checkpoint(RESTART)`),
    };
  });
  const checkpointAll = () => {
    for (const c of checkpoints) {
      try {
        // `log`: the pages the WAL holds now, since it last started over
        const { log } = c.passive.get() as { busy: number; log: number; checkpointed: number };
        if (log >= job.restartPages) c.restart.get();
      } catch {
        // an I/O error (a full disk, say) fails this turn, not the thread: the next turn tries again, and the
        // serving connections' own statements report the fault where it matters
      }
    }
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
