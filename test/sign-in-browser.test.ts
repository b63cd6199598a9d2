import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import type { Browser, Page } from 'playwright-core';
import { connectAdmin } from './helpers/admin.ts';
import { DEMO_AGENT, pkce, REDIRECT_URI as SEEDED_REDIRECT_URI, tokenRequest } from './helpers/browser.ts';
import { launchChromium, locateChromium, watchProblems } from './helpers/chromium.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

/**
 * Signing in through idjag's own pages in a real browser, as a user switching accounts would: with a session
 * for alice, an authorization request with prompt=login and bob's credentials ends at the client with bob's
 * code. The provider signs alice out on the way with a page that submits itself (its inline script allowed by
 * the CSP through the script's hash): a browser runs it, so only a browser test shows the whole path works.
 */

const TIMEOUT = 60_000;
/** with no browser at all this is not run, and `npm test` says so in its summary (and fails in CI) */
const browserTest = 'missing' in locateChromium() ? test.skip : test;

let idjag: TestServer;
let browser: Browser;
/** the client's redirect URI: a listener of this test's, registered for demo-agent beside the seeded one */
let client: Server;
let REDIRECT_URI: string;
const problems: string[] = [];

beforeAll(async () => {
  idjag = await startTestServer();
  client = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>client</title><p>back at the client</p>'));
  await new Promise<void>((resolve) => client.listen(0, '127.0.0.1', resolve));
  REDIRECT_URI = `http://127.0.0.1:${(client.address() as AddressInfo).port}/callback`;
  const api = await connectAdmin(idjag.url);
  const current = (await api.get('/clients/demo-agent')).body.redirect_uris as string[];
  expect((await api.patch('/clients/demo-agent', { redirect_uris: [...current, REDIRECT_URI] })).status).toBe(200);
  expect(current).toContain(SEEDED_REDIRECT_URI);
  browser = await launchChromium();
}, TIMEOUT);

afterAll(async () => {
  await browser?.close();
  client?.close();
  await idjag?.dispose();
});

afterEach(() => {
  expect(problems.splice(0)).toEqual([]);
});

/** Where the browser came back to the client (the URL with the code), once it did. */
function clientPage(page: Page): () => URL | undefined {
  watchProblems(page, problems);
  return () => (page.url().startsWith(REDIRECT_URI) ? new URL(page.url()) : undefined);
}

/** One authorization request through the real pages; the code's tokens. */
async function signInThrough(page: Page, reached: () => URL | undefined, username: string, prompt?: string) {
  const { verifier, challenge } = pkce();
  const params = new URLSearchParams({
    client_id: 'demo-agent', response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid profile',
    code_challenge: challenge, code_challenge_method: 'S256', state: `s-${username}`, nonce: 'n', ...(prompt ? { prompt } : {}),
  });
  await page.goto(`${idjag.url}/auth?${params}`);
  await page.locator('#username').fill(username);
  await page.locator('#password').fill(username);
  await page.locator('button[type=submit]', { hasText: 'Sign in' }).click();
  await page.waitForURL(`${REDIRECT_URI}**`);
  const back = reached()!;
  expect(back.searchParams.get('error')).toBeNull();
  expect(back.searchParams.get('state')).toBe(`s-${username}`);
  const tokens = await tokenRequest(idjag.url, { grant_type: 'authorization_code', code: back.searchParams.get('code')!, redirect_uri: REDIRECT_URI, code_verifier: verifier }, DEMO_AGENT);
  expect(tokens.status).toBe(200);
  return decodeJwt(tokens.body.id_token as string);
}

browserTest('with a session for alice, prompt=login and bob\'s credentials sign bob in', async () => {
  const page = await (await browser.newContext()).newPage();
  const reached = clientPage(page);
  expect(await signInThrough(page, reached, 'alice')).toMatchObject({ preferred_username: 'alice' });
  expect(await signInThrough(page, reached, 'bob', 'login')).toMatchObject({ preferred_username: 'bob' });
  // the session is bob's now: a request without prompt=login needs no sign-in
  await page.goto(`${idjag.url}/auth?${new URLSearchParams({
    client_id: 'demo-agent', response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid',
    code_challenge: pkce().challenge, code_challenge_method: 'S256', state: 's',
  })}`);
  await page.waitForURL(`${REDIRECT_URI}**`);
  expect(reached()!.searchParams.get('code')).toEqual(expect.any(String));
}, TIMEOUT);
