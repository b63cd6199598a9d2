/**
 * Several nodes, one database: three `npm start` processes on one PostgreSQL database behind a round-robin
 * load balancer (a few lines of node:http here), the deployment README "Deployment" describes. Nothing is
 * shared between the nodes but the database: a sign-in on one node, its code redeemed on another, the audit
 * row read from a third; two nodes racing to redeem one code; one DPoP proof raced to every node (one wins, with
 * a nonce one node handed out); an admin change made through one node obeyed by another on the next request; a
 * sign-in block counted on one node enforced by another.
 *
 * PostgreSQL only: SQLite is the one-machine, one-process deployment (its file is not for several machines).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { sql } from 'kysely';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { openDatabase, type Database } from '../src/db/index.ts';
import { adminClient, clientToken, type AdminClient } from './helpers/admin.ts';
import { authorize, Browser, csrfFrom, DEMO_AGENT, pkce, REDIRECT_URI, signIn, tokenRequest } from './helpers/browser.ts';
import { createTestDatabase, onPostgres, type TestDatabase } from './helpers/database.ts';
import { dpopKey, makeProof } from './helpers/dpop.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';

const NODES = 3;

interface Node {
  name: string;
  url: string;
  process: ChildProcess;
  exited: Promise<number | null>;
  stderr: string[];
}

/** `node src/main.ts` on the shared database, with the balancer's address as its issuer. */
async function startNode(name: string, database: string, issuer: string): Promise<Node> {
  const child = spawn(process.execPath, [
    // one process per node: the nodes are the subject here (a node's own workers are test/cluster.test.ts's)
    'src/main.ts', '--workers', '1', '--port', '0', '--host', '127.0.0.1', '--issuer', issuer, '--database', database, '--log-level', 'warn',
    '--no-demo', '--login-account-failures', '3', '--login-account-block', '60', '--login-ip-failures', '0',
    // keys re-read every second instead of every 30 s, so the rotation test below stays short
    '--key-refresh', '1',
    // DPoP proofs need a server nonce, which any node hands out and every node accepts
    '--dpop-nonce',
  ], { env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => stderr.push(l));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const port = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = /^\s+listening\s+127\.0\.0\.1:(\d+)$/.exec(line);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`node ${name} exited early with ${code}:\n${stderr.slice(-20).join('\n')}`)));
  });
  return { name, url: `http://127.0.0.1:${port}`, process: child, exited, stderr };
}

/** Round robin over the nodes, as a load balancer with no session affinity does. */
function balancer(targets: () => string[]): { server: Server; hits: Map<string, number> } {
  let next = 0;
  const hits = new Map<string, number>();
  const server = createServer((req, res) => {
    const list = targets();
    const target = new URL(list[next++ % list.length]!);
    hits.set(target.origin, (hits.get(target.origin) ?? 0) + 1);
    const upstream = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  return { server, hits };
}

/** One sign-in attempt through the login form of `base`, in a fresh authorization request: the status. */
async function loginAttempt(base: string, username: string, password: string): Promise<{ status: number; retryAfter: string | null }> {
  const browser = new Browser();
  const params = new URLSearchParams({
    client_id: 'demo-agent', response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid',
    code_challenge: pkce().challenge, code_challenge_method: 'S256', nonce: 'n', state: 's',
  });
  const start = await browser.get(`${base}/auth?${params}`);
  const page = new URL(new URL(start.headers.get('location')!, base).pathname, base).toString();
  const form = await browser.get(page);
  const res = await browser.postForm(`${page}/login`, { _csrf: csrfFrom(await form.text()), username, password });
  await res.arrayBuffer();
  return { status: res.status, retryAfter: res.headers.get('retry-after') };
}

(onPostgres ? describe : describe.skip)(`${NODES} idjag processes on one PostgreSQL database`, () => {
  let scratch: TestDatabase;
  let lb: ReturnType<typeof balancer>;
  let issuer: string;
  let nodes: Node[] = [];
  let database: Database;
  let admin: AdminClient[];

  beforeAll(async () => {
    scratch = await createTestDatabase('idjag-multi-node');
    lb = balancer(() => nodes.map((n) => n.url));
    await new Promise<void>((resolve) => lb.server.listen(0, '127.0.0.1', resolve));
    issuer = `http://127.0.0.1:${(lb.server.address() as AddressInfo).port}`;
    // all at once on the empty database: migrations, keys and seed must still happen exactly once
    nodes = await Promise.all(['A', 'B', 'C'].slice(0, NODES).map((name) => startNode(name, scratch.location, issuer)));
    database = openDatabase(scratch.location);
    admin = await Promise.all(nodes.map(async (n) => adminClient(n.url, await clientToken(n.url))));
  }, 60_000);

  afterAll(async () => {
    for (const n of nodes) n.process.kill('SIGTERM');
    const codes = await Promise.all(nodes.map((n) => n.exited));
    await new Promise((resolve) => lb?.server.close(resolve));
    lb?.server.closeAllConnections();
    await database?.close();
    await scratch?.dispose();
    expect(codes).toEqual(nodes.map(() => 0));
  });

  test('started together on an empty database: one active signing key per purpose, seeded once, the same JWKS on every node', async () => {
    const active = await database.db.selectFrom('signing_keys').select(['purpose']).where('retired_at', 'is', null).orderBy('purpose').execute();
    expect(active.map((k) => k.purpose)).toEqual(['id_jag', 'id_token']);
    const users = await database.db.selectFrom('users').select('username').orderBy('username').execute();
    expect(users.map((u) => u.username)).toEqual(['admin', 'alice', 'bob']);
    const seedChanges = await database.db.selectFrom('admin_changes').select('entity_id').where('actor', '=', 'seed').where('entity', '=', 'user').execute();
    expect(seedChanges.map((c) => c.entity_id).sort()).toEqual(['admin', 'alice', 'bob']);
    const jwks = await Promise.all(nodes.map(async (n) => JSON.stringify(await (await fetch(`${n.url}/jwks`)).json())));
    expect(new Set(jwks).size).toBe(1);
    const discovery = await Promise.all(nodes.map(async (n) => (await (await fetch(`${n.url}/.well-known/openid-configuration`)).json() as { issuer: string }).issuer));
    expect(discovery).toEqual(nodes.map(() => issuer));
  });

  test('alice signs in on node A, her code is redeemed and her ID Token exchanged on node B, and node C\'s audit shows the decision', async () => {
    const [a, b] = nodes as [Node, Node, Node];
    const { code, verifier } = await authorize(a.url);
    const tokens = await tokenRequest(b.url, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier }, DEMO_AGENT);
    expect(tokens.status).toBe(200);
    expect(decodeJwt(tokens.body.id_token)).toMatchObject({ iss: issuer, aud: 'demo-agent' });

    const res = await exchange(b.url, tokens.body.id_token);
    expect(res.status).toBe(200);
    const jti = decodeJwt(res.body.access_token).jti!;

    // the jti as the audit codec reads it: an empty jti is the row's own id (src/audit/codec.ts, encodeOwnId)
    const [row] = await database.db.selectFrom('audit_log').select('id').where(sql<string>`coalesce(nullif(jti, ''), id)`, '=', jti).execute();
    expect(row).toBeDefined();
    const page = await admin[2]!.get('/audit?client_id=demo-agent&decision=issued&limit=500');
    expect(page.status).toBe(200);
    expect(page.body.items.map((r: { id: string }) => r.id)).toContain(row!.id);
    const entry = await admin[2]!.get(`/audit/${row!.id}`);
    expect(entry.status).toBe(200);
    expect(entry.body).toMatchObject({ jti, decision: 'issued', client_id: 'demo-agent', username: 'alice', audience: TODO_AS, resources: [TODO_MCP] });
  });

  test('two nodes racing to redeem one authorization code: exactly one wins', async () => {
    for (let round = 0; round < 3; round++) {
      const { code, verifier } = await authorize(nodes[round % NODES]!.url);
      const form = { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier };
      // every node twice, all at once
      const results = await Promise.all([...nodes, ...nodes].map((n) => tokenRequest(n.url, form, DEMO_AGENT)));
      expect(results.filter((r) => r.status === 200)).toHaveLength(1);
      for (const lost of results.filter((r) => r.status !== 200)) {
        expect({ status: lost.status, error: lost.body.error, token: lost.body.access_token }).toEqual({ status: 400, error: 'invalid_grant', token: undefined });
      }
    }
  });

  test('two nodes racing to redeem one refresh token: exactly one wins', async () => {
    for (let round = 0; round < 3; round++) {
      const { tokens } = await signIn(nodes[round % NODES]!.url, { scope: 'openid offline_access', prompt: 'consent' });
      const form = { grant_type: 'refresh_token', refresh_token: tokens.refresh_token };
      const results = await Promise.all([...nodes, ...nodes].map((n) => tokenRequest(n.url, form, DEMO_AGENT)));
      expect(results.filter((r) => r.status === 200)).toHaveLength(1);
      for (const lost of results.filter((r) => r.status !== 200)) {
        expect({ status: lost.status, error: lost.body.error, token: lost.body.access_token }).toEqual({ status: 400, error: 'invalid_grant', token: undefined });
      }
    }
  });

  test('one DPoP proof presented to every node at once: exactly one ID-JAG, bound to its key (the replay store is the database)', async () => {
    const { tokens } = await signIn(nodes[0]!.url);
    const key = await dpopKey();
    // the token endpoint as the nodes' issuer names it: the balancer's
    const htu = `${issuer}/token`;
    for (let round = 0; round < 3; round++) {
      // a nonce from one node, good on the others
      const challenge = await exchange(nodes[round % NODES]!.url, tokens.id_token, {}, DEMO_AGENT, { DPoP: await makeProof(key, { htu }) });
      expect({ status: challenge.status, error: challenge.body.error }).toEqual({ status: 400, error: 'use_dpop_nonce' });
      const proof = await makeProof(key, { htu, nonce: challenge.headers.get('dpop-nonce')! });
      const results = await Promise.all([...nodes, ...nodes].map((n) => exchange(n.url, tokens.id_token, {}, DEMO_AGENT, { DPoP: proof })));
      const issued = results.filter((r) => r.status === 200);
      expect(issued).toHaveLength(1);
      expect(decodeJwt(issued[0]!.body.access_token).cnf).toEqual({ jkt: key.jkt });
      for (const lost of results.filter((r) => r.status !== 200)) {
        expect({ status: lost.status, error: lost.body.error, token: lost.body.access_token }).toEqual({ status: 400, error: 'invalid_dpop_proof', token: undefined });
        expect(lost.body.error_description).toMatch(/already used/);
      }
    }
    const replays = await database.db.selectFrom('audit_log').select('reason').where('reason', '=', 'dpop_replay').execute();
    expect(replays).toHaveLength(3 * (2 * NODES - 1));
  });

  test('a rule disabled through node A denies on node B at the next request, and enabled again issues there', async () => {
    const [, b, c] = nodes as [Node, Node, Node];
    const alice = await signIn(c.url);
    expect((await exchange(b.url, alice.tokens.id_token)).status).toBe(200);

    expect((await admin[0]!.post('/rules/engineering-todo/disable')).status).toBe(200);
    try {
      const denied = await exchange(b.url, alice.tokens.id_token);
      expect({ status: denied.status, error: denied.body.error }).toEqual({ status: 400, error: 'invalid_target' });
    } finally {
      expect((await admin[0]!.post('/rules/engineering-todo/enable')).status).toBe(200);
    }
    expect((await exchange(b.url, alice.tokens.id_token)).status).toBe(200);
  });

  test('a sign-in block counted on node A is enforced by nodes B and C (the counters are in the database)', async () => {
    const [a, b, c] = nodes as [Node, Node, Node];
    for (let i = 0; i < 3; i++) expect((await loginAttempt(a.url, 'bob', 'not-the-password')).status).toBe(401);
    // the right password, elsewhere: refused without being checked
    for (const n of [b, c]) expect(await loginAttempt(n.url, 'bob', 'bob')).toEqual({ status: 429, retryAfter: expect.stringMatching(/^(59|60)$/) });
  });

  test('keys rotated through node A are published and used by nodes B and C within the refresh interval; tokens signed before still verify', async () => {
    const [, b, c] = nodes as [Node, Node, Node];
    const alice = await signIn(b.url);
    const before = await exchange(c.url, alice.tokens.id_token);
    expect(before.status).toBe(200);

    const rotated = await admin[0]!.post('/keys/rotate', {});
    expect(rotated.status).toBe(200);
    const created: string[] = rotated.body.created;
    expect(created).toHaveLength(2);

    // every node publishes the new keys within a few refresh intervals (1 s here, 30 s by default)
    const deadline = Date.now() + 10_000;
    for (const n of [b, c]) {
      let kids: string[] = [];
      while (Date.now() < deadline) {
        kids = ((await (await fetch(`${n.url}/jwks`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
        if (created.every((k) => kids.includes(k))) break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(kids).toEqual(expect.arrayContaining(created));
    }
    // ...and signs with them: the ID-JAG and the ID Token from B and C carry a new kid
    const after = await exchange(c.url, alice.tokens.id_token);
    expect(after.status).toBe(200);
    expect(created).toContain(decodeProtectedHeader(after.body.access_token).kid);
    const fresh = await signIn(b.url);
    expect(created).toContain(decodeProtectedHeader(fresh.tokens.id_token).kid);
    // the ID-JAG signed before the rotation still verifies against every node's JWKS
    for (const n of nodes) await jwtVerify(before.body.access_token, createRemoteJWKSet(new URL(`${n.url}/jwks`)), { issuer });
  }, 30_000);

  test('kill -9 of one node under load: every ID-JAG a client received, from any node, has its audit row', async () => {
    const victim = await startNode('D', scratch.location, issuer);
    const targets = [nodes[0]!, victim];
    const alice = await signIn(targets[0]!.url);
    const received: string[] = [];
    let fromVictim = 0;
    let stop = false;
    const loop = async (base: string) => {
      while (!stop) {
        try {
          const res = await exchange(base, alice.tokens.id_token);
          if (res.status === 200) {
            received.push(decodeJwt(res.body.access_token).jti!);
            if (base === victim.url) fromVictim++;
          }
        } catch {
          if (base === victim.url) return; // the node is gone: this client stops
        }
      }
    };
    const clients = Array.from({ length: 8 }, (_, i) => loop(targets[i % 2]!.url));
    // killed under load: once the new node has answered (its first exchanges, cold, may take a while on a busy
    // machine), and a moment more
    const deadline = Date.now() + 10_000;
    while (fromVictim === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    await new Promise((resolve) => setTimeout(resolve, 500));
    victim.process.kill('SIGKILL');
    await victim.exited;
    await new Promise((resolve) => setTimeout(resolve, 300));
    stop = true;
    await Promise.all(clients);
    // the killed node had issued some before it died, and the survivor kept issuing
    expect(fromVictim).toBeGreaterThan(0);
    expect(received.length).toBeGreaterThan(fromVictim);
    const jtiAsRead = sql<string>`coalesce(nullif(jti, ''), id)`;
    const rows = await database.db.selectFrom('audit_log').select(jtiAsRead.as('jti')).where('decision', '=', 'issued').where(jtiAsRead, 'in', received).execute();
    expect(new Set(rows.map((r) => r.jti)).size).toBe(new Set(received).size);
  }, 30_000);

  test('through the load balancer, a whole sign-in and exchange hops between nodes and still works', async () => {
    const before = new Map(lb.hits);
    const alice = await signIn(issuer);
    const res = await exchange(issuer, alice.tokens.id_token);
    expect(res.status).toBe(200);
    // round robin: every node served part of it
    for (const n of nodes) expect((lb.hits.get(n.url) ?? 0) - (before.get(n.url) ?? 0)).toBeGreaterThan(0);
  });
});
