/**
 * Database faults at the token exchange: a read-only database, a full one, one locked by another process, one
 * that flaps between writable and not under concurrent load, and one that cannot even be read. Whatever the
 * fault, the exchange fails closed: 503 temporarily_unavailable, no token, and no ID-JAG ever leaves without its
 * audit row. The faults are simulated on the server's own SQLite connection (this suite runs as root, so file
 * permissions would not stop it):
 * - read-only: `PRAGMA query_only`, which refuses writes with SQLITE_READONLY as a read-only file does;
 * - full: `PRAGMA max_page_count` at the current size, which refuses growth with SQLITE_FULL as a full disk does;
 * - locked: a second connection holding a write transaction, with a short busy_timeout (SQLITE_BUSY);
 * - unreadable: the connection closed under the server, so every query throws, reads included.
 * These are SQLite's own faults, injected through its file and connection, so they run on SQLite only. On
 * PostgreSQL the equivalent fault is the database refusing connections (the last describe).
 */
import SQLite from 'better-sqlite3';
import { sql } from 'kysely';
import { decodeJwt } from 'jose';
import type { Config } from '../src/config/index.ts';
import { AUDIT_SCHEMA, auditFileOf } from '../src/db/index.ts';
import { basic, signIn, type TokenResponse } from './helpers/browser.ts';
import { exchange, ID_JAG, ID_TOKEN, TODO_AS, TODO_MCP, TOKEN_EXCHANGE } from './helpers/exchange.ts';
import { maintenance, onPostgres, sqliteHandle, sqliteOnly } from './helpers/database.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// The token endpoint's per-client limit on at its default, the per-user one off: this test sends one user's
// requests by the hundred, past the per-user limit (300 a minute by default).
const UNREACHABLE_RATE_LIMIT = { tokenUserRateLimit: 0 } as Partial<Config>;

/** 503 temporarily_unavailable, no token of any kind, no-store, and a description that blames no request check. */
function expectFailedClosed(res: TokenResponse) {
  expect({ status: res.status, error: res.body.error }).toEqual({ status: 503, error: 'temporarily_unavailable' });
  expect(res.body).not.toHaveProperty('access_token');
  expect(res.body).not.toHaveProperty('issued_token_type');
  expect(JSON.stringify(res.body)).not.toMatch(/eyJ/);
  expect(res.headers.get('cache-control')).toBe('no-store');
  expect(res.headers.get('www-authenticate')).toBeNull();
  // the IdP failed, not the request: no request check may be named as the cause
  expect(res.body.error_description).toMatch(/issued nothing; retry shortly/);
  expect(res.body.error_description).not.toMatch(/failed check/);
}

// SQLite only: PRAGMAs, a second connection on the file, and closing the better-sqlite3 handle are SQLite's.
sqliteOnly('SQLite faults', () => {
  let idjag: TestServer;
  let alice: Awaited<ReturnType<typeof signIn>>;

  beforeAll(async () => {
    idjag = await startTestServer(UNREACHABLE_RATE_LIMIT);
    alice = await signIn(idjag.url);
  });
  afterAll(() => idjag.dispose());

  const sqlite = () => sqliteHandle(idjag.database);
  const count = (where = '1 = 1') => (sqlite().prepare(`select count(*) as n from audit_log where ${where}`).get() as { n: number }).n;
  // the jti as the audit codec reads it: an empty jti is the row's own id (src/audit/codec.ts, encodeOwnId)
  const issuedRow = (jti: string) => sqlite().prepare("select decision from audit_log where coalesce(nullif(jti, ''), id) = ? and decision = 'issued'").get(jti);

  async function expectIssuedAndAudited() {
    const res = await exchange(idjag.url, alice.tokens.id_token);
    expect(res.status).toBe(200);
    expect(issuedRow(decodeJwt(res.body.access_token).jti!)).toEqual({ decision: 'issued' });
  }

  /** The three kinds of request the fault must close on: one that would be issued, one the grant denies, one the provider refuses. */
  const requests = {
    'an exchange that would be issued': () => exchange(idjag.url, alice.tokens.id_token),
    'an exchange the grant would deny (unknown audience)': () => exchange(idjag.url, alice.tokens.id_token, { audience: 'https://auth.unknown.example' }),
    'an exchange the provider would refuse (wrong client secret)': () => exchange(idjag.url, alice.tokens.id_token, {}, { id: 'demo-agent', secret: 'wrong' }),
  };

  describe.each([
    ['read-only (SQLITE_READONLY)', () => sqlite().pragma('query_only = ON'), () => sqlite().pragma('query_only = OFF')],
    ['full (SQLITE_FULL)', () => {
      // the audit rows' file (src/db: every request writes there, never to the main file)
      const pages = sqlite().pragma(`${AUDIT_SCHEMA}.page_count`, { simple: true }) as number;
      sqlite().pragma(`${AUDIT_SCHEMA}.max_page_count = ${pages}`);
      // Fill what room is left (free pages, and the audit table's last page down to a few bytes), so the next
      // audit row needs a page the file cannot get: from here every write that grows the file fails.
      const filler = sqlite().prepare("insert into audit_log (id, at, request_id, decision, reason, explanation, checks) values (?, ?, 'filler', 'error', 'hardening_filler', ?, '[]')");
      let n = 0;
      for (const size of [4000, 1000, 250, 60, 1]) {
        try {
          for (;;) filler.run(`zzzz-filler-${String(n++).padStart(8, '0')}`, Date.now(), 'x'.repeat(size));
        } catch (err) {
          expect((err as { code?: string }).code).toBe('SQLITE_FULL');
        }
      }
    }, () => {
      sqlite().pragma(`${AUDIT_SCHEMA}.max_page_count = 4294967294`);
      sqlite().prepare("delete from audit_log where reason = 'hardening_filler'").run();
    }],
  ])('a %s database', (_name, breakIt, repair) => {
    test.each(Object.entries(requests))('%s answers 503 temporarily_unavailable, writes nothing, and service resumes once repaired', async (_what, send) => {
      await expectIssuedAndAudited();
      breakIt();
      const before = count();
      try {
        for (let i = 0; i < 3; i++) expectFailedClosed(await send());
        expect(count()).toBe(before);
      } finally {
        repair();
      }
      await expectIssuedAndAudited();
    });
  });

  describe('a database locked by another process (SQLITE_BUSY after busy_timeout)', () => {
    let other: SQLite.Database;
    beforeEach(() => {
      sqlite().pragma('busy_timeout = 100');
      other = new SQLite(auditFileOf(idjag.config.database));
      other.exec('BEGIN IMMEDIATE');
    });
    afterEach(() => {
      if (other.inTransaction) other.exec('ROLLBACK');
      other.close();
      sqlite().pragma('busy_timeout = 5000');
    });

    test.each(Object.entries(requests))('%s answers 503 within a few busy timeouts, and issues once the lock is gone', async (_what, send) => {
      const before = count();
      const started = performance.now();
      expectFailedClosed(await send());
      // reads still work in WAL mode: only the audit row waits for the lock, once or twice, never minutes
      expect(performance.now() - started).toBeLessThan(2000);
      other.exec('ROLLBACK');
      expect(count()).toBe(before);
      await expectIssuedAndAudited();
    });
  });

  test('a database flapping between writable and read-only under 8 concurrent clients: every ID-JAG received has its audit row', async () => {
    const received: string[] = [];
    const failures: TokenResponse[] = [];
    let stop = false;
    const flapper = (async () => {
      for (let i = 0; !stop; i++) {
        sqlite().pragma(`query_only = ${i % 2 ? 'ON' : 'OFF'}`);
        await new Promise((resolve) => setTimeout(resolve, 3 + (i % 5)));
      }
      sqlite().pragma('query_only = OFF');
    })();
    const loop = async () => {
      while (!stop) {
        const res = await exchange(idjag.url, alice.tokens.id_token);
        if (res.status === 200) received.push(decodeJwt(res.body.access_token).jti!);
        else failures.push(res);
      }
    };
    setTimeout(() => { stop = true; }, 1500);
    await Promise.all([flapper, ...Array.from({ length: 8 }, loop)]);

    const missing = received.filter((jti) => !issuedRow(jti));
    expect(missing).toEqual([]);
    for (const res of failures) expectFailedClosed(res);
    // the fault really hit, and service went on between the faults
    expect(received.length).toBeGreaterThan(20);
    expect(failures.length).toBeGreaterThan(5);
    expect(new Set(received).size).toBe(received.length);
  }, 20_000);

  describe('a database that cannot even be read (the connection is gone)', () => {
    let broken: TestServer;
    let idToken: string;
    beforeAll(async () => {
      broken = await startTestServer(UNREACHABLE_RATE_LIMIT);
      idToken = (await signIn(broken.url)).tokens.id_token;
      sqliteHandle(broken.database).close();
    });
    afterAll(() => broken.dispose());

    const raw = (auth: { id: string; secret: string } | null, extra: Record<string, string> = {}) => fetch(`${broken.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(auth ? { authorization: basic(auth.id, auth.secret) } : {}) },
      body: new URLSearchParams({
        grant_type: TOKEN_EXCHANGE, requested_token_type: ID_JAG, subject_token: idToken, subject_token_type: ID_TOKEN,
        audience: TODO_AS, resource: TODO_MCP, ...extra,
      }),
    }).then(async (res) => ({ status: res.status, body: await res.json() as Record<string, unknown>, headers: res.headers }));

    test.each([
      ['the right client credentials', { id: 'demo-agent', secret: 'demo-agent-secret' }],
      ['a wrong secret', { id: 'demo-agent', secret: 'wrong' }],
      ['credentials in the body', null],
    ] as const)('an exchange with %s fails closed at the provider\'s client lookup: 503, not a 500', async (_name, auth) => {
      const res = await raw(auth, auth ? {} : { client_id: 'demo-agent', client_secret: 'demo-agent-secret' });
      expectFailedClosed(res as TokenResponse);
    });

    test('and health says so', async () => {
      expect((await fetch(`${broken.url}/healthz`)).status).toBe(503);
    });
  });
});

// PostgreSQL only: the database refusing connections (a server restarting, a failover, a network cut). The
// pool's connections are cut and every new one is refused; the exchange fails closed, health says so, and
// service resumes once the database takes connections again.
(onPostgres ? describe : describe.skip)('a PostgreSQL database that refuses connections', () => {
  let idjag: TestServer;
  let alice: Awaited<ReturnType<typeof signIn>>;
  let name: string;
  beforeAll(async () => {
    idjag = await startTestServer(UNREACHABLE_RATE_LIMIT);
    alice = await signIn(idjag.url);
    name = idjag.testDatabase.name!;
  });
  afterAll(async () => {
    await maintenance(`alter database "${name}" allow_connections true`);
    await idjag.dispose();
  });

  test('a connection cut while checked out between two statements fails that work only: the process stays up, the pool recovers', async () => {
    const { pool } = idjag.database as Extract<typeof idjag.database, { dialect: 'postgres' }>;
    const client = await pool.connect();
    const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
    const ended = new Promise((resolve) => client.once('end', resolve));
    await maintenance(`select pg_terminate_backend(${rows[0]!.pid})`);
    await ended;
    await expect(client.query('select 1')).rejects.toThrow();
    client.release(true);
    const ok = await exchange(idjag.url, alice.tokens.id_token);
    expect(ok.status).toBe(200);
  });

  test('every kind of exchange answers 503 temporarily_unavailable, health 503, and service resumes once it is back', async () => {
    const ok = await exchange(idjag.url, alice.tokens.id_token);
    expect(ok.status).toBe(200);
    await maintenance(`alter database "${name}" allow_connections false`);
    await maintenance(`select pg_terminate_backend(pid) from pg_stat_activity where datname = '${name}' and pid <> pg_backend_pid()`);
    try {
      expectFailedClosed(await exchange(idjag.url, alice.tokens.id_token));
      expectFailedClosed(await exchange(idjag.url, alice.tokens.id_token, { audience: 'https://auth.unknown.example' }));
      expectFailedClosed(await exchange(idjag.url, alice.tokens.id_token, {}, { id: 'demo-agent', secret: 'wrong' }));
      expect((await fetch(`${idjag.url}/healthz`)).status).toBe(503);
    } finally {
      await maintenance(`alter database "${name}" allow_connections true`);
    }
    const again = await exchange(idjag.url, alice.tokens.id_token);
    expect(again.status).toBe(200);
    const jti = decodeJwt(again.body.access_token).jti!;
    expect(await idjag.database.db.selectFrom('audit_log').select('decision').where(sql<string>`coalesce(nullif(jti, ''), id)`, '=', jti).executeTakeFirst()).toEqual({ decision: 'issued' });
    expect((await fetch(`${idjag.url}/healthz`)).status).toBe(200);
  });
});
