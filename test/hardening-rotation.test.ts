/**
 * Key rotation while exchanges run: 8 clients exchange ID Tokens for ID-JAGs without pause while both signing
 * keys (ID Token and ID-JAG) are rotated five times, as `npm run keys:rotate` and the admin API do (a new key
 * row, then the node reloads its provider). Every exchange succeeds, including those presenting ID Tokens
 * signed by keys retired meanwhile; every ID-JAG verifies, both when it arrives (against the JWKS served then,
 * fetched again whenever its kid is new) and after the run (against the final JWKS); so does every ID Token.
 * And the demo Resource AS, a verifier that caches the IdP's JWKS, accepts an ID-JAG signed right after a rotation.
 */
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import type { Config } from '../src/config/index.ts';
import { rotateSigningKeys } from '../src/oidc/keys.ts';
import { basic, signIn } from './helpers/browser.ts';
import { exchange, TODO_AS } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const CLIENTS = 8;
const ROTATIONS = 5;

// The token endpoint's per-client limit on at its default, the per-user one off: this test sends one user's
// requests by the hundred, past the per-user limit (300 a minute by default).
const UNREACHABLE_RATE_LIMIT = { tokenUserRateLimit: 0 } as Partial<Config>;

let idjag: TestServer;
beforeAll(async () => {
  idjag = await startTestServer(UNREACHABLE_RATE_LIMIT);
});
afterAll(() => idjag.dispose());

const fetchJwks = async () => (await fetch(`${idjag.url}/jwks`)).json() as Promise<JSONWebKeySet>;

/** A relying party: keeps the JWKS it fetched, and fetches it again when a token names a kid it lacks. */
class Verifier {
  #jwks: JSONWebKeySet = { keys: [] };
  fetches = 0;

  async verify(token: string, expected: { typ: string; audience: string }) {
    const kid = decodeProtectedHeader(token).kid;
    if (!this.#jwks.keys.some((k) => k.kid === kid)) {
      this.#jwks = await fetchJwks();
      this.fetches++;
    }
    return jwtVerify(token, createLocalJWKSet(this.#jwks), { issuer: idjag.issuer, ...expected });
  }
}

test(`${ROTATIONS} rotations under ${CLIENTS} concurrent exchanges: no failed exchange, no failed verification`, async () => {
  const { db } = idjag.database;
  // ID Tokens to present, one more from each key generation: old ones stay in use after their key retires
  const idTokens = [(await signIn(idjag.url)).tokens.id_token as string];
  const jags: { token: string; generation: number }[] = [];
  const failures: string[] = [];
  const verifier = new Verifier();
  let generation = 0;
  let stop = false;

  const client = async (n: number) => {
    for (let i = n; !stop; i++) {
      const subject = idTokens[i % idTokens.length]!;
      const at = generation;
      const res = await exchange(idjag.url, subject);
      if (res.status !== 200) {
        failures.push(`exchange ${res.status} ${JSON.stringify(res.body)}`);
        continue;
      }
      jags.push({ token: res.body.access_token, generation: at });
      await verifier.verify(res.body.access_token, { typ: 'oauth-id-jag+jwt', audience: TODO_AS })
        .catch((err: Error) => failures.push(`on arrival: ${err.message}`));
    }
  };
  const rotator = async () => {
    for (let r = 1; r <= ROTATIONS; r++) {
      await new Promise((resolve) => setTimeout(resolve, 150));
      await rotateSigningKeys(db);
      expect(await idjag.host.refreshKeys()).toBe(true);
      generation = r;
      idTokens.push((await signIn(idjag.url)).tokens.id_token);
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
    stop = true;
  };
  await Promise.all([rotator(), ...Array.from({ length: CLIENTS }, (_, n) => client(n))]);

  expect(failures).toEqual([]);
  // the rotations happened during the load: ID-JAGs from every generation, signed by as many keys
  expect(new Set(jags.map((j) => j.generation))).toEqual(new Set([0, 1, 2, 3, 4, 5]));
  const jagKids = new Set(jags.map((j) => decodeProtectedHeader(j.token).kid));
  expect(jagKids.size).toBe(ROTATIONS + 1);
  expect(new Set(idTokens.map((t) => decodeProtectedHeader(t).kid)).size).toBe(ROTATIONS + 1);

  // after the run, against the JWKS as it is now: every token issued before, during and after the rotations
  const jwks = createLocalJWKSet(await fetchJwks());
  const late: string[] = [];
  for (const { token } of jags) {
    await jwtVerify(token, jwks, { issuer: idjag.issuer, audience: TODO_AS, typ: 'oauth-id-jag+jwt', algorithms: ['ES256'] })
      .catch((err: Error) => late.push(err.message));
  }
  for (const token of idTokens) {
    await jwtVerify(token, jwks, { issuer: idjag.issuer, audience: 'demo-agent', algorithms: ['RS256'] }).catch((err: Error) => late.push(err.message));
  }
  expect(late).toEqual([]);
  expect(jags.length).toBeGreaterThan(100);
}, 30_000);

test('the demo Resource AS, holding the JWKS it fetched a moment ago, accepts ID-JAGs signed by the key a rotation just created', async () => {
  const alice = await signIn(idjag.url);
  const demo = idjag.demo!;
  const jag = async () => {
    const res = await exchange(idjag.url, alice.tokens.id_token, { audience: demo.asIssuer, resource: demo.mcpResource });
    expect(res.status).toBe(200);
    return res.body.access_token as string;
  };
  const present = async (assertion: string) => {
    const res = await fetch(`${idjag.url}/demo/as/token`, {
      method: 'POST',
      headers: { authorization: basic('demo-agent-at-todo', 'demo-agent-at-todo-secret'), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }),
    });
    return { status: res.status, body: await res.json() as Record<string, unknown> };
  };
  const before = [await jag(), await jag()];
  // the AS verifies one, so it holds the JWKS as it was before the rotation
  expect((await present(before[0]!)).status).toBe(200);

  const { created } = await rotateSigningKeys(idjag.database.db);
  expect(await idjag.host.refreshKeys()).toBe(true);
  const after = await jag();
  expect(created).toContain(decodeProtectedHeader(after).kid);

  expect(await present(after)).toMatchObject({ status: 200, body: { token_type: 'Bearer' } });
  // and one signed before the rotation, presented after it
  expect(await present(before[1]!)).toMatchObject({ status: 200, body: { token_type: 'Bearer' } });
});
