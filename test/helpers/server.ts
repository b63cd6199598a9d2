import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../src/config/index.ts';
import { startIdjag, type Idjag } from '../../src/main.ts';

export interface TestServer extends Idjag {
  dir: string;
  /** close the server, keeping the database file */
  stop(): Promise<void>;
  /** close the server and delete its temp dir */
  dispose(): Promise<void>;
}

/** A real idjag on an ephemeral port with a fresh SQLite file in a temp dir (or `dir`, to restart on one). */
export async function startTestServer(overrides: Partial<Config> = {}, dir?: string): Promise<TestServer> {
  const home = dir ?? mkdtempSync(join(tmpdir(), 'idjag-test-'));
  const config = loadConfig([], {}, { port: 0, host: '127.0.0.1', database: join(home, 'idjag.db'), logLevel: 'silent', ...overrides });
  const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const idjag = await startIdjag({ ...config, issuer: config.issuer }, { log });
  return {
    ...idjag,
    dir: home,
    async stop() {
      await idjag.close();
      // let the test's pooled keep-alive sockets see the close before the next server takes the port
      await new Promise((resolve) => setTimeout(resolve, 100));
    },
    async dispose() {
      await idjag.close();
      rmSync(home, { recursive: true, force: true });
    },
  };
}
