import { Browser } from './helpers/browser.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
beforeAll(async () => {
  idjag = await startTestServer();
});
afterAll(() => idjag.dispose());

test('HTML pages carry a CSP without inline script, no framing and no Referer; no HSTS over http', async () => {
  const browser = new Browser();
  const auth = await browser.get(`${idjag.url}/auth?${new URLSearchParams({ client_id: 'demo-agent', response_type: 'code', redirect_uri: 'http://127.0.0.1:8976/callback', scope: 'openid', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })}`);
  const login = await browser.get(new URL(auth.headers.get('location')!, idjag.url).toString());
  const error = await fetch(`${idjag.url}/interaction/nope`);
  for (const res of [login, error]) {
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain("frame-ancestors 'none'");
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('strict-transport-security')).toBeNull();
  }
  expect(await login.text()).not.toMatch(/<script(?![^>]*\bsrc=)/);
});
