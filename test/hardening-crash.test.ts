/**
 * Crash durability: `npm start` as a real process, 16 clients exchanging ID Tokens for ID-JAGs as fast as it
 * answers, then `kill -9` in the middle of it. On the database the dead process left: every ID-JAG a client
 * received (the whole response read) has its `issued` audit row (matched by `jti`), and SQLite's
 * `integrity_check` passes. Restarted on the same database, the IdP serves again: the same ID Token (the keys
 * survived) gets a new ID-JAG, audited too. On PostgreSQL the same runs, but for the integrity check: the
 * server's files are not the dead process's to damage, so there is nothing of idjag's to check there.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import SQLite from 'better-sqlite3';
import { decodeJwt } from 'jose';
import pg from 'pg';
import { AUDIT_SCHEMA, auditFileOf, isPostgresUrl } from '../src/db/index.ts';
import { signIn } from './helpers/browser.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { exchange } from './helpers/exchange.ts';

const CLIENTS = 16;
const LOAD_MS = 1000;

interface Child {
  process: ChildProcess;
  url: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: string[];
}

/** `node src/main.ts` on `database`, resolved once it prints where it runs (the issuer names the port). */
async function startChild(database: string, port = 0): Promise<Child> {
  // one process: the kill lands on the very process writing the audit rows (with several workers, killing the
  // primary leaves the workers to finish their requests; a killed worker is test/cluster.test.ts's)
  const child = spawn(process.execPath, ['src/main.ts', '--workers', '1', '--port', String(port), '--host', '127.0.0.1', '--log-level', 'warn', '--database', database], {
    // the per-client token limit on at its default; the per-user one off, out of reach of this one user's load
    env: { ...process.env, NODE_OPTIONS: '', IDJAG_TOKEN_USER_RATE_LIMIT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => stderr.push(l));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = /idjag is running at (\S+)/.exec(line);
      if (m) resolve(m[1]!);
    });
    void exited.then(({ code }) => reject(new Error(`the server exited early with ${code}:\n${stderr.slice(-20).join('\n')}`)));
  });
  return { process: child, url, exited, stderr };
}

/**
 * A direct look at the database, as an operator would after the crash: SQLite recovers the WAL on open and
 * checks its file; PostgreSQL is asked for the rows (its own crash safety is the server's, not idjag's).
 */
async function inspect(database: string, jtis: string[]): Promise<{ integrity: string[] | undefined; issued: number; missing: string[] }> {
  // the jti as the audit codec reads it: an empty jti is the row's own id (src/audit/codec.ts, encodeOwnId)
  const query = "select coalesce(nullif(jti, ''), id) as jti from audit_log where decision = 'issued'";
  let integrity: string[] | undefined;
  let rows: { jti: string }[];
  if (isPostgresUrl(database)) {
    const client = new pg.Client({ connectionString: database });
    await client.connect();
    try {
      rows = (await client.query<{ jti: string }>(query)).rows;
    } finally {
      await client.end();
    }
  } else {
    const sqlite = new SQLite(database);
    try {
      sqlite.prepare(`attach database ? as ${AUDIT_SCHEMA}`).run(auditFileOf(database));
      integrity = (sqlite.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check);
      rows = sqlite.prepare(query).all() as { jti: string }[];
    } finally {
      sqlite.close();
    }
  }
  const issued = new Set(rows.map((r) => r.jti));
  return { integrity, issued: issued.size, missing: jtis.filter((j) => !issued.has(j)) };
}

let scratch: TestDatabase;
const children: Child[] = [];
beforeAll(async () => {
  scratch = await createTestDatabase('idjag-crash');
});
afterAll(async () => {
  for (const c of children) c.process.kill('SIGKILL');
  await Promise.all(children.map((c) => c.exited));
  await scratch.dispose();
});

test(`kill -9 under ${CLIENTS} concurrent exchanges loses no audit row of an ID-JAG a client received, and the restart serves`, async () => {
  const database = scratch.location;
  const first = await startChild(database);
  children.push(first);
  const alice = await signIn(first.url);

  const received: string[] = [];
  const refused: number[] = [];
  const cutOff: string[] = [];
  const client = async () => {
    for (;;) {
      try {
        const res = await exchange(first.url, alice.tokens.id_token);
        if (res.status === 200) received.push(decodeJwt(res.body.access_token).jti!);
        else refused.push(res.status);
      } catch (err) {
        // the process died under this request, or before it: the client got nothing
        cutOff.push(String((err as { cause?: { code?: string } }).cause?.code ?? err));
        return;
      }
    }
  };
  const clients = Array.from({ length: CLIENTS }, client);
  await new Promise((resolve) => setTimeout(resolve, LOAD_MS));
  const inFlightAtKill = received.length;
  first.process.kill('SIGKILL');
  expect(await first.exited).toEqual({ code: null, signal: 'SIGKILL' });
  await Promise.all(clients);

  // the load was real and the kill landed in it: every client was cut off, and none was refused before
  expect(refused).toEqual([]);
  expect(cutOff).toHaveLength(CLIENTS);
  expect(inFlightAtKill).toBeGreaterThan(50);
  expect(new Set(received).size).toBe(received.length);

  const crashed = await inspect(database, received);
  if (!scratch.name) expect(crashed.integrity).toEqual(['ok']);
  expect(crashed.missing).toEqual([]);
  // rows of responses the crash swallowed may exist; fewer rows than tokens received may not
  expect(crashed.issued).toBeGreaterThanOrEqual(received.length);

  // on the same port, so the issuer is the same and alice's ID Token is still this IdP's
  const second = await startChild(database, Number(new URL(first.url).port));
  expect(second.url).toBe(first.url);
  children.push(second);
  expect((await fetch(`${second.url}/healthz`)).status).toBe(200);
  const again = await exchange(second.url, alice.tokens.id_token);
  expect(again.status).toBe(200);
  const jti = decodeJwt(again.body.access_token).jti!;
  const restarted = await inspect(database, [...received, jti]);
  if (!scratch.name) expect(restarted.integrity).toEqual(['ok']);
  expect(restarted.missing).toEqual([]);

  second.process.kill('SIGTERM');
  expect((await second.exited).code).toBe(0);
}, 60_000);
