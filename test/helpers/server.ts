import { pino } from 'pino';
import { loadConfig, type Config } from '../../src/config/index.ts';
import { startIdjag, type Idjag } from '../../src/main.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';

export interface TestServer extends Idjag {
  /** a scratch directory of this server's own (on SQLite its database file is in it) */
  dir: string;
  /** the database it runs on: pass it to startTestServer again to restart on the same one */
  testDatabase: TestDatabase;
  /** close the server, keeping the database */
  stop(): Promise<void>;
  /** close the server and delete its database and temp dir */
  dispose(): Promise<void>;
}

/**
 * A real idjag on an ephemeral port with a fresh database (a SQLite file in a temp dir, or a PostgreSQL
 * database with IDJAG_TEST_DB=postgres), or on `database` to restart on one.
 */
export async function startTestServer(overrides: Partial<Config> = {}, database?: TestDatabase): Promise<TestServer> {
  const testDatabase = database ?? await createTestDatabase('idjag-test');
  try {
    const config = loadConfig([], {}, { port: 0, host: '127.0.0.1', database: testDatabase.location, logLevel: 'silent', ...overrides });
    const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
    const idjag = await startIdjag({ ...config, issuer: config.issuer }, { log });
    return {
      ...idjag,
      dir: testDatabase.dir,
      testDatabase,
      async stop() {
        await idjag.close();
        // let the test's pooled keep-alive sockets see the close before the next server takes the port
        await new Promise((resolve) => setTimeout(resolve, 100));
      },
      async dispose() {
        await idjag.close();
        await testDatabase.dispose();
      },
    };
  } catch (err) {
    if (!database) await testDatabase.dispose();
    throw err;
  }
}
