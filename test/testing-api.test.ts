import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { ConfigError } from '../src/config/index.ts';
import { SeedError } from '../seed/index.ts';
import { startIdjag, SignInFailed, type IdjagTestServer, type SeedDocument } from '../src/testing/index.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { TODO_AS, TODO_MCP } from './helpers/exchange.ts';

/**
 * The testing API (`idjag/testing`) from the sources: start and stop from hooks, signIn without a browser
 * through the real login, exchange, the audit log, an author's own seed, and the refusal in production mode.
 * test/package.test.ts runs the same API from the packed and installed package.
 */

/** A client author's own world: one user, a third-party client, one MCP server and a rule. */
const OWN_SEED: SeedDocument = {
  groups: [{ name: 'testers' }],
  users: [{ username: 'carol', password: 'carol-password', email: 'carol@example.test', groups: ['testers'] }],
  clients: [{
    client_id: 'my-mcp-client',
    client_secret: 'my-mcp-client-secret',
    token_endpoint_auth_method: 'client_secret_post',
    redirect_uris: ['http://127.0.0.1:9999/cb'],
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:token-exchange'],
    response_types: ['code'],
  }],
  resource_servers: [{ issuer: 'https://as.example.test', name: 'Files AS', mcp_servers: [{ resource: 'https://mcp.example.test/mcp', name: 'Files MCP server', scopes: ['files.read'] }] }],
  rules: [{
    id: 'testers-files', client_id: 'my-mcp-client', audience: 'https://as.example.test', resource: 'https://mcp.example.test/mcp',
    who: { groups: ['testers'] }, scopes: ['files.read'], default_scopes: ['files.read'], rs_client_id: 'my-client-at-as',
  }],
};

describe('the default seed, on the suite\'s database', () => {
  let idjag: IdjagTestServer;
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase('idjag-testing-api');
    idjag = await startIdjag({ database: database.location });
  });
  afterAll(async () => {
    await idjag?.close();
    await database?.dispose();
  });

  test('a free port, and discovery names the issuer', async () => {
    expect(idjag.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(idjag.url).not.toMatch(/:0$/);
    const discovery = await (await fetch(`${idjag.issuer}/.well-known/openid-configuration`)).json() as { issuer: string };
    expect(discovery.issuer).toBe(idjag.issuer);
  });

  test('signIn gives a verified ID Token and a refresh token, and the exchange gives alice an ID-JAG', async () => {
    const alice = await idjag.signIn({ username: 'alice', clientId: 'demo-agent' });
    expect(alice.claims).toMatchObject({ iss: idjag.issuer, aud: 'demo-agent', email: 'alice@example.com', amr: ['pwd'] });
    expect(alice.refresh_token).toEqual(expect.any(String));
    expect(alice.scope.split(' ')).toEqual(expect.arrayContaining(['openid', 'offline_access']));

    const res = await idjag.exchange({ subjectToken: alice.id_token, clientId: 'demo-agent', audience: TODO_AS, resource: TODO_MCP });
    expect(res.status).toBe(200);
    expect(decodeJwt(String(res.body.access_token))).toMatchObject({ iss: idjag.issuer, sub: alice.claims.sub, aud: TODO_AS, client_id: 'demo-agent-at-todo' });

    const viaRefresh = await idjag.exchange({ subjectToken: alice.refresh_token!, subjectTokenType: 'refresh_token', clientId: 'demo-agent', audience: TODO_AS, resource: TODO_MCP });
    expect(viaRefresh.status).toBe(200);
  });

  test('bob is denied, and audit() shows every decision of the run, newest first, with its checks', async () => {
    const bob = await idjag.signIn({ username: 'bob', clientId: 'demo-agent' });
    const res = await idjag.exchange({ subjectToken: bob.id_token, clientId: 'demo-agent', audience: TODO_AS, resource: TODO_MCP });
    expect(res).toMatchObject({ status: 400, body: { error: 'invalid_target' } });

    const all = await idjag.audit();
    expect(all.map((e) => [e.username, e.decision])).toEqual([['bob', 'denied'], ['alice', 'issued'], ['alice', 'issued']]);
    expect(all[0]!.checks.find((c) => c.status === 'failed')?.name).toBe('policy');
    await expect(idjag.audit({ decision: 'denied' })).resolves.toHaveLength(1);
    await expect(idjag.audit({ user: 'alice' })).resolves.toHaveLength(2);
  });

  test('a third-party client\'s consent page is answered: Allow by default, Deny with consent: false', async () => {
    await expect(idjag.signIn({ username: 'alice', clientId: 'partner-app' })).resolves.toMatchObject({ claims: { aud: 'partner-app' } });
    await expect(idjag.signIn({ username: 'bob', clientId: 'partner-app', consent: false })).rejects.toThrow(/access_denied/);
  });

  test('a wrong password goes through the real login and is refused like any other', async () => {
    const failure = idjag.signIn({ username: 'alice', clientId: 'demo-agent', password: 'not-alice' });
    await expect(failure).rejects.toBeInstanceOf(SignInFailed);
    await expect(failure).rejects.toThrow('Wrong username or password.');
    await expect(idjag.signIn({ username: 'nobody', clientId: 'demo-agent' })).rejects.toThrow('no password for nobody');
  });
});

describe('an author\'s own seed', () => {
  test('as a document: its user signs in through its client, and its rule decides', async () => {
    const idjag = await startIdjag({ seed: OWN_SEED, demo: false });
    try {
      const carol = await idjag.signIn({ username: 'carol', clientId: 'my-mcp-client' });
      expect(carol.claims).toMatchObject({ email: 'carol@example.test', aud: 'my-mcp-client' });
      const res = await idjag.exchange({ subjectToken: carol.id_token, clientId: 'my-mcp-client', audience: 'https://as.example.test', resource: 'https://mcp.example.test/mcp' });
      expect(res.status).toBe(200);
      expect(decodeJwt(String(res.body.access_token))).toMatchObject({ client_id: 'my-client-at-as', scope: 'files.read' });
      // only the author's seed: none of the development users
      await expect(idjag.signIn({ username: 'alice', clientId: 'my-mcp-client', password: 'alice' })).rejects.toThrow('Wrong username or password.');
      expect((await fetch(`${idjag.url}/demo/mcp`, { method: 'POST' })).status).toBe(404);
    } finally {
      await idjag.close();
    }
  });

  test('as a file; a file that is not a valid document, or no file at all, stops the start with the reason', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'idjag-seed-'));
    try {
      writeFileSync(join(dir, 'seed.json'), JSON.stringify(OWN_SEED));
      const idjag = await startIdjag({ seed: join(dir, 'seed.json') });
      await expect(idjag.signIn({ username: 'carol', clientId: 'my-mcp-client' })).resolves.toMatchObject({ claims: { email: 'carol@example.test' } });
      await idjag.close();

      writeFileSync(join(dir, 'bad.json'), JSON.stringify({ users: [{ username: 'dave', password: 'dave-password', colour: 'blue' }] }));
      const bad = startIdjag({ seed: join(dir, 'bad.json') });
      await expect(bad).rejects.toBeInstanceOf(SeedError);
      await expect(bad).rejects.toThrow(/bad\.json is not a valid configuration document:\n {2}users\.0: .*colour/);
      await expect(startIdjag({ seed: join(dir, 'missing.json') })).rejects.toThrow(ConfigError);
      await expect(startIdjag({ seed: join(dir, 'missing.json') })).rejects.toThrow(`seedFile: no such file: ${join(dir, 'missing.json')}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('lifecycle and modes', () => {
  test('two servers at once get two ports; close() stops the server', async () => {
    const [a, b] = await Promise.all([startIdjag(), startIdjag()]);
    expect(a!.url).not.toBe(b!.url);
    await a!.close();
    await expect(fetch(`${a!.url}/healthz`)).rejects.toThrow();
    expect((await fetch(`${b!.url}/healthz`)).status).toBe(200);
    await b!.close();
  });

  test('in production mode signIn is refused before anything is sent, and the server itself runs', async () => {
    // production mode needs an https issuer; `url` is where the server listens all the same
    const idjag = await startIdjag({ production: true, issuer: 'https://idp.example.test' });
    try {
      await expect(idjag.signIn({ username: 'alice', clientId: 'demo-agent' })).rejects.toThrow('refused in production mode');
      expect((await fetch(`${idjag.url}/healthz`)).status).toBe(200);
    } finally {
      await idjag.close();
    }
  });

  test('the in-memory database leaves no file behind', async () => {
    const before = new Set(readdirSync(tmpdir()));
    const idjag = await startIdjag();
    const created = readdirSync(tmpdir()).filter((f) => !before.has(f) && f.startsWith('idjag-testing-'));
    await idjag.close();
    expect(created.length).toBeGreaterThan(0);
    for (const f of created) expect(existsSync(join(tmpdir(), f))).toBe(false);
  });
});
