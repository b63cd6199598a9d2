/**
 * Defects found by trying idjag as an attacker and as a load balancer would: client ids guessed by timing,
 * discovery steered by the Host header, an empty Basic secret answered as a syntax error, and signing in
 * as another user in the same browser. (Startup and readiness: lifecycle.test.ts; the throttle on every
 * path spelling: throttling.test.ts; refresh tokens as subject tokens: exchange-errors.test.ts.)
 */
import { request } from 'node:http';
import { decodeJwt } from 'jose';
import { authorize, Browser, DEMO_AGENT, REDIRECT_URI, tokenRequest } from './helpers/browser.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
beforeAll(async () => {
  // the failed-authentication throttle would answer 429 long before the timing samples are taken
  idjag = await startTestServer({ clientAuthIpFailures: 0, clientAuthClientFailures: 0 });
});
afterAll(() => idjag.dispose());

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;

const median = (times: number[]) => [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!;

/** The median time of each call, in milliseconds, the calls interleaved so a passing load affects both alike. */
async function medianMs(n: number, a: () => Promise<unknown>, b: () => Promise<unknown>): Promise<[number, number]> {
  const times: [number[], number[]] = [[], []];
  for (let i = 0; i < n; i++) {
    for (const [j, call] of [a, b].entries()) {
      const t = performance.now();
      await call();
      times[j]!.push(performance.now() - t);
    }
  }
  return [median(times[0]), median(times[1])];
}

describe('client ids cannot be told apart by timing', () => {
  // Not a performance assertion: the property is that both answers cost the same key derivation, so the
  // unknown id must take a comparable time. Before the fix the ratio was about 0.03 (3 ms against 100 ms).
  const SAMPLES = 9;

  test('at the token endpoint, a wrong secret for a real client and any secret for an unknown client take alike', async () => {
    const attempt = (id: string) => tokenRequest(idjag.url, { grant_type: 'client_credentials' }, { id, secret: 'a-wrong-secret' });
    expect((await attempt('demo-agent')).status).toBe(401);
    expect((await attempt('no-such-client')).status).toBe(401);
    const [known, unknown] = await medianMs(SAMPLES, () => attempt('demo-agent'), () => attempt('no-such-client'));
    expect(unknown / known).toBeGreaterThan(0.5);
    expect(known / unknown).toBeGreaterThan(0.5);
  });

  test('a secret presented for a client that authenticates with a key costs the same', async () => {
    // partner-jwt authenticates with private_key_jwt (seed): a secret for it is refused, after the same work
    const clients = await idjag.database.db.selectFrom('clients').select(['client_id', 'metadata']).execute();
    const keyed = clients.find((c) => (JSON.parse(c.metadata) as { token_endpoint_auth_method?: string }).token_endpoint_auth_method === 'private_key_jwt');
    if (!keyed) {
      await idjag.database.db.insertInto('clients').values({
        client_id: 'keyed-client', secret_hash: null, first_party: 0, disabled: 0, created_at: 0, updated_at: 0,
        metadata: JSON.stringify({ token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [] }, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] }),
      }).execute();
    }
    const id = keyed?.client_id ?? 'keyed-client';
    const attempt = (cid: string) => tokenRequest(idjag.url, { grant_type: 'client_credentials' }, { id: cid, secret: 'a-wrong-secret' });
    expect((await attempt(id)).status).toBe(401);
    const [known, keyedMs] = await medianMs(SAMPLES, () => attempt('demo-agent'), () => attempt(id));
    expect(keyedMs / known).toBeGreaterThan(0.5);
  });

  test('at the client diagnostics view too', async () => {
    const view = (id: string) => fetch(`${idjag.url}/conformance/clients/${id}?format=json`, { headers: { authorization: basic(id, 'a-wrong-secret') } });
    expect((await view('demo-agent')).status).toBe(401);
    expect((await view('no-such-client')).status).toBe(401);
    const [known, unknown] = await medianMs(SAMPLES, () => view('demo-agent'), () => view('no-such-client'));
    expect(unknown / known).toBeGreaterThan(0.5);
  });
});

/** A GET with headers fetch will not send (Host) or an absolute-form request target. */
function rawGet(path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(idjag.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method: 'GET', headers, setHost: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Every absolute URL in a JSON document. */
const urlsIn = (doc: unknown): string[] => JSON.stringify(doc).match(/https?:\/\/[^"\\]+/g) ?? [];

describe('every URL derives from the configured issuer', () => {
  test.each([
    ['Host', '/.well-known/openid-configuration', { host: 'evil.example' }],
    ['X-Forwarded-Host and -Proto', '/.well-known/openid-configuration', { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' }],
    ['Host, RFC 8414 metadata', '/.well-known/oauth-authorization-server', { host: 'evil.example:8443' }],
    ['an absolute-form request target', 'http://evil.example/.well-known/openid-configuration', { host: 'evil.example' }],
  ])('discovery ignores a forged %s', async (_name, path, headers) => {
    const res = await rawGet(path, headers);
    expect(res.status).toBe(200);
    const doc = JSON.parse(res.body) as Record<string, unknown>;
    expect(doc.issuer).toBe(idjag.issuer);
    expect(doc.token_endpoint).toBe(`${idjag.issuer}/token`);
    const urls = urlsIn(doc);
    expect(urls.length).toBeGreaterThan(5);
    // the discovery document's own endpoints: the issuer's origin, never the request's
    for (const url of urls.filter((u) => !u.startsWith('http://openid.net') && !u.startsWith('https://openid.net'))) {
      expect(url.startsWith(`${idjag.issuer}/`) || url === idjag.issuer).toBe(true);
    }
    expect(res.body).not.toContain('evil.example');
  });

  test('the same in production behind a proxy (X-Forwarded-For still names the client)', async () => {
    const prod = await startTestServer({ production: true, issuer: 'https://idp.example.com', cookieKeys: ['a-cookie-key-of-32-characters!!!'] });
    try {
      const res = await fetch(`${prod.url.replace('https://idp.example.com', `http://127.0.0.1:${(prod.server.address() as { port: number }).port}`)}/.well-known/openid-configuration`, {
        headers: { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'http' },
      });
      const doc = await res.json() as Record<string, unknown>;
      expect(doc.token_endpoint).toBe('https://idp.example.com/token');
      expect(JSON.stringify(doc)).not.toContain('evil.example');
    } finally {
      await prod.dispose();
    }
  });
});

describe('client authentication errors (RFC 6749 §5.2)', () => {
  test.each(['/token', '/token/introspection', '/token/revocation'])('an empty secret in HTTP Basic at %s is 401 invalid_client with a challenge', async (path) => {
    const res = await fetch(`${idjag.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('demo-agent:').toString('base64')}` },
      body: new URLSearchParams(path === '/token' ? { grant_type: 'client_credentials' } : { token: 'x' }),
    });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm="/);
    expect(await res.json()).toEqual({ error: 'invalid_client', error_description: 'the client secret in the Authorization header is empty' });
  });

  test('no client authentication at all is 401 invalid_client at introspection too', async () => {
    const res = await fetch(`${idjag.url}/token/introspection`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: 'x' }),
    });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm="/);
    expect((await res.json() as { error: string }).error).toBe('invalid_client');
  });
});

describe('signing in as another user in the same browser', () => {
  test('with a session for alice, prompt=login and signing in as bob gives bob\'s code and ID Token', async () => {
    const browser = new Browser();
    const first = await authorize(idjag.url, { browser, username: 'alice', password: 'alice' });
    expect(first.code).toEqual(expect.any(String));
    const second = await authorize(idjag.url, { browser, prompt: 'login', username: 'bob', password: 'bob' });
    const tokens = await tokenRequest(idjag.url, { grant_type: 'authorization_code', code: second.code, redirect_uri: REDIRECT_URI, code_verifier: second.verifier }, DEMO_AGENT);
    expect(tokens.status).toBe(200);
    expect(decodeJwt(tokens.body.id_token as string)).toMatchObject({ preferred_username: 'bob' });
    // and back to alice, without prompt=login the session is bob's now
    const third = await authorize(idjag.url, { browser });
    const again = await tokenRequest(idjag.url, { grant_type: 'authorization_code', code: third.code, redirect_uri: REDIRECT_URI, code_verifier: third.verifier }, DEMO_AGENT);
    expect(decodeJwt(again.body.id_token as string)).toMatchObject({ preferred_username: 'bob' });
  });
});
