import { randomUUID } from 'node:crypto';
import { createRemoteJWKSet, decodeJwt, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { applyDocument, parseDocument } from '../src/admin/document.ts';
import { authorize, Browser, csrfFrom, REDIRECT_URI, signIn, tokenRequest } from './helpers/browser.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const PARTNER = { id: 'partner-app', secret: 'partner-app-secret' };

let idjag: TestServer;
beforeAll(async () => {
  idjag = await startTestServer();
});
afterAll(() => idjag.dispose());

test('discovery names the issuer, the code flow with PKCE and the client auth methods', async () => {
  const res = await fetch(`${idjag.url}/.well-known/openid-configuration`);
  expect(res.status).toBe(200);
  const meta = await res.json() as Record<string, any>;
  expect(meta.issuer).toBe(idjag.issuer);
  expect(meta.response_types_supported).toEqual(['code']);
  expect(meta.code_challenge_methods_supported).toEqual(['S256']);
  expect(meta.token_endpoint_auth_methods_supported).toEqual(expect.arrayContaining(['client_secret_basic', 'client_secret_post', 'private_key_jwt']));
  expect(meta.grant_types_supported).toEqual(expect.arrayContaining(['authorization_code', 'refresh_token']));
  expect(meta.introspection_endpoint).toBeDefined();
  expect(meta.revocation_endpoint).toBeDefined();
});

test('healthz checks the database', async () => {
  const res = await fetch(`${idjag.url}/healthz`);
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual({ status: 'ok', database: 'ok' });
});

test('alice signs in through the login form and gets an ID Token that verifies against the served JWKS', async () => {
  const { tokens, nonce } = await signIn(idjag.url, { scope: 'openid email profile offline_access', prompt: 'consent' });
  const jwks = createRemoteJWKSet(new URL(`${idjag.url}/jwks`));
  const { payload, protectedHeader } = await jwtVerify(tokens.id_token, jwks, { issuer: idjag.issuer, audience: 'demo-agent' });
  expect(protectedHeader.alg).toBe('RS256');
  expect(payload.nonce).toBe(nonce);
  expect(payload.sub).toEqual(expect.any(String));
  expect(payload.email).toBe('alice@example.com');
  expect(payload.amr).toEqual(['pwd']);
  expect(tokens.refresh_token).toEqual(expect.any(String));

  // the refresh token works and yields a fresh ID Token for the same user
  const refreshed = await tokenRequest(idjag.url, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token }, { id: 'demo-agent', secret: 'demo-agent-secret' });
  expect(refreshed.status).toBe(200);
  expect(decodeJwt(refreshed.body.id_token).sub).toBe(payload.sub);

  // userinfo answers for the access token
  const me = await fetch(`${idjag.url}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
  expect(me.status).toBe(200);
  expect(await me.json()).toMatchObject({ sub: payload.sub, email: 'alice@example.com', preferred_username: 'alice' });
});

test('client_secret_post is accepted too, and a wrong secret is invalid_client', async () => {
  const { code, verifier } = await authorize(idjag.url);
  const wrong = await tokenRequest(idjag.url, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier }, { id: 'demo-agent', secret: 'nope' });
  expect(wrong.status).toBe(401);
  expect(wrong.body.error).toBe('invalid_client');
  const ok = await tokenRequest(idjag.url, {
    grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier,
    client_id: 'demo-agent', client_secret: 'demo-agent-secret',
  });
  expect(ok.status).toBe(200);
});

test('a third-party client shows the consent screen; a first-party one does not', async () => {
  const first = await authorize(idjag.url);
  expect(first.pages.some((p) => p.body?.includes('/confirm"'))).toBe(false);
  const third = await authorize(idjag.url, { clientId: 'partner-app' });
  const consent = third.pages.find((p) => p.body?.includes('/confirm"'));
  expect(consent?.body).toContain('Partner app');
  const tokens = await tokenRequest(idjag.url, { grant_type: 'authorization_code', code: third.code, redirect_uri: REDIRECT_URI, code_verifier: third.verifier }, PARTNER);
  expect(tokens.status).toBe(200);
});

test('denying consent sends the user back with access_denied and no code', async () => {
  const browser = new Browser();
  const stopped = await authorize(idjag.url, { clientId: 'partner-app', consent: false, browser })
    .then(() => { throw new Error('expected to stop at the consent page'); }, (e: { page: string; pages: { url: string }[] }) => e);
  expect(stopped.page).toContain('/confirm"');
  const consentUrl = stopped.pages.at(-1)!.url;
  let res = await browser.postForm(`${consentUrl}/abort`, { _csrf: csrfFrom(stopped.page) });
  for (let hop = 0; hop < 5 && res.status === 303 && !res.headers.get('location')!.startsWith(REDIRECT_URI); hop++) {
    res = await browser.get(new URL(res.headers.get('location')!, idjag.url).toString());
  }
  const back = new URL(res.headers.get('location')!);
  expect(back.searchParams.get('error')).toBe('access_denied');
  expect(back.searchParams.get('code')).toBeNull();
});

test('the public client uses PKCE without a secret', async () => {
  const { code, verifier } = await authorize(idjag.url, { clientId: 'demo-public' });
  const res = await tokenRequest(idjag.url, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: 'demo-public' });
  expect(res.status).toBe(200);
  expect(res.body.id_token).toEqual(expect.any(String));
});

test('private_key_jwt: a client authenticates with a signed assertion instead of a secret', async () => {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  await applyDocument(idjag.database.db, parseDocument({
    clients: [{
      client_id: 'pkjwt-agent', first_party: true, token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [jwk] },
      redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], response_types: ['code'],
    }],
  }));
  const { code, verifier } = await authorize(idjag.url, { clientId: 'pkjwt-agent' });
  const assertion = (key: Parameters<SignJWT["sign"]>[0]) => new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer('pkjwt-agent').setSubject('pkjwt-agent').setAudience(idjag.issuer).setJti(randomUUID()).setIssuedAt().setExpirationTime('1m').sign(key);
  const form = {
    grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
  };
  const other = await generateKeyPair('ES256');
  const forged = await tokenRequest(idjag.url, { ...form, client_assertion: await assertion(other.privateKey) });
  expect(forged.status).toBe(401);
  expect(forged.body.error).toBe('invalid_client');
  const ok = await tokenRequest(idjag.url, { ...form, client_assertion: await assertion(privateKey) });
  expect(ok.status).toBe(200);
  expect(decodeJwt(ok.body.id_token).aud).toBe('pkjwt-agent');
});

describe('bad input', () => {
  test('wrong password: the login page says so, with 401, and no code is issued', async () => {
    await expect(authorize(idjag.url, { password: 'wrong' })).rejects.toMatchObject({ page: expect.stringContaining('Wrong username or password.') });
  });

  test('unknown user: the same message as a wrong password', async () => {
    await expect(authorize(idjag.url, { username: 'mallory', password: 'x' })).rejects.toMatchObject({ page: expect.stringContaining('Wrong username or password.') });
  });

  test('a disabled user cannot sign in', async () => {
    await idjag.database.db.updateTable('users').set({ disabled: 1 }).where('username', '=', 'bob').execute();
    try {
      await expect(authorize(idjag.url, { username: 'bob', password: 'bob' })).rejects.toMatchObject({ page: expect.stringContaining('This account is disabled') });
    } finally {
      await idjag.database.db.updateTable('users').set({ disabled: 0 }).where('username', '=', 'bob').execute();
    }
  });

  test('a replayed authorization code is invalid_grant', async () => {
    const { code, verifier } = await authorize(idjag.url);
    const form = { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier };
    expect((await tokenRequest(idjag.url, form, { id: 'demo-agent', secret: 'demo-agent-secret' })).status).toBe(200);
    const again = await tokenRequest(idjag.url, form, { id: 'demo-agent', secret: 'demo-agent-secret' });
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');
  });

  test('a wrong PKCE verifier is invalid_grant', async () => {
    const { code } = await authorize(idjag.url);
    const res = await tokenRequest(idjag.url, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: 'x'.repeat(43) }, { id: 'demo-agent', secret: 'demo-agent-secret' });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_grant');
  });

  test('a request without PKCE is refused', async () => {
    const res = await fetch(`${idjag.url}/auth?${new URLSearchParams({ client_id: 'demo-agent', response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid' })}`, { redirect: 'manual' });
    expect(res.status).toBe(303);
    const back = new URL(res.headers.get('location')!);
    expect(back.origin + back.pathname).toBe(REDIRECT_URI);
    expect(back.searchParams.get('error')).toBe('invalid_request');
    expect(back.searchParams.get('error_description')).toMatch(/PKCE/);
  });

  test('an unknown client and a wrong redirect URI get an error page, not a redirect', async () => {
    for (const params of [
      { client_id: 'nobody', redirect_uri: REDIRECT_URI },
      { client_id: 'demo-agent', redirect_uri: 'https://evil.example/cb' },
    ]) {
      const res = await fetch(`${idjag.url}/auth?${new URLSearchParams({ ...params, response_type: 'code', scope: 'openid', code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' })}`, { redirect: 'manual' });
      expect(res.status).toBe(400);
      const html = await res.text();
      expect(html).toMatch(/invalid_client|invalid_redirect_uri/);
      expect(html).not.toMatch(/at .*\.js:\d+/);
    }
  });

  test('a login post without its CSRF token is refused and signs nobody in', async () => {
    const browser = new Browser();
    const { challenge } = { challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM' };
    let res = await browser.get(`${idjag.url}/auth?${new URLSearchParams({ client_id: 'demo-agent', response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid', code_challenge: challenge, code_challenge_method: 'S256' })}`);
    const interaction = new URL(res.headers.get('location')!, idjag.url).toString();
    res = await browser.get(interaction);
    csrfFrom(await res.text());
    const post = await browser.postForm(`${interaction}/login`, { username: 'alice', password: 'alice' });
    expect(post.status).toBe(403);
    expect(await post.text()).toContain('security token');
    const stale = await browser.postForm(`${interaction}/login`, { username: 'alice', password: 'alice', _csrf: 'forged-token' });
    expect(stale.status).toBe(403);
    // still at the login step: nobody was signed in
    expect((await (await browser.get(interaction)).text())).toContain('/login"');
  });

  test('a tampered or missing interaction cookie gets a friendly 400 page', async () => {
    const res = await fetch(`${idjag.url}/interaction/does-not-exist`);
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('sign-in request expired');
    const tampered = await fetch(`${idjag.url}/interaction/abc`, { headers: { cookie: 'idjag.interaction=abc; idjag.interaction.sig=forged' } });
    expect(tampered.status).toBe(400);
  });

  test('malformed form posts are answered without a 500', async () => {
    const bodies: [string, string][] = [
      ['application/x-www-form-urlencoded', '%%%'],
      ['application/x-www-form-urlencoded', 'username[]=a&username[]=b&password=x'],
      ['application/json', '{"username":'],
      ['text/plain', 'hello'],
    ];
    for (const [type, body] of bodies) {
      const res = await fetch(`${idjag.url}/interaction/abc/login`, { method: 'POST', headers: { 'content-type': type }, body });
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
    }
    const token = await fetch(`${idjag.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '%%%' });
    expect(token.status).toBeLessThan(500);
  });
});
