import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { compactVerify, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, type JWTPayload } from 'jose';
import {
  AS_CASES, formatAsReport, JWT_BEARER, OTHER_AS, OTHER_CLIENT, OTHER_IDP, OTHER_RESOURCE, runAsConformance,
  type AsConformanceOptions, type AsConformanceReport, type ConformanceIdp,
} from '../src/conformance/as-kit.ts';
import { idjagConformanceIdp } from '../src/conformance/idjag-idp.ts';
import { DEMO_AS_CLIENT } from '../src/demo/seeded.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let idp: ConformanceIdp;
let fakes: FakeAses;

beforeAll(async () => {
  idjag = await startTestServer();
  idp = await idjagConformanceIdp(idjag.database.db, idjag.issuer);
  fakes = await startFakeAses();
});

afterAll(async () => {
  await fakes?.close();
  await idjag?.dispose();
});

/** The demo Resource AS that `npm start` serves under the issuer, with its seeded client and MCP server. */
function demoTarget(): Omit<AsConformanceOptions, 'idp'> {
  const demo = idjag.demo!;
  return {
    tokenEndpoint: `${demo.asIssuer}/token`,
    issuer: demo.asIssuer,
    clientId: DEMO_AS_CLIENT.clientId,
    clientSecret: DEMO_AS_CLIENT.clientSecret,
    resource: demo.mcpResource,
  };
}

const REJECTIONS = AS_CASES.filter((c) => c.expected === 'rejected').map((c) => c.id);
const byId = (report: AsConformanceReport, id: string) => report.cases.find((c) => c.id === id)!;
const failing = (report: AsConformanceReport) => report.cases.filter((c) => !c.pass).map((c) => c.id);

test('the kit has every case the issue asks for, valid first, each with a section', () => {
  expect(AS_CASES.map((c) => c.id)).toEqual([
    'valid', 'typ-wrong', 'alg-none', 'signature-unknown-key', 'signature-forged-kid', 'iss-other', 'aud-other-as',
    'aud-array-of-two', 'client-id-other', 'expired', 'iat-future', 'jti-missing', 'jti-replay', 'resource-other', 'scope-beyond',
  ]);
  expect(AS_CASES.filter((c) => c.expected === 'accepted').map((c) => c.id)).toEqual(['valid']);
  expect(AS_CASES.filter((c) => !c.required).map((c) => c.id)).toEqual(['iat-future']);
  for (const c of AS_CASES) expect(c.section).toMatch(/(draft|RFC) /);
});

describe('against the demo Resource AS', () => {
  let report: AsConformanceReport;
  beforeAll(async () => {
    report = await runAsConformance({ ...demoTarget(), idp });
  });

  test('every case passes, every rejection is a 400 invalid_grant', () => {
    expect(report.cases.map((c) => [c.id, c.pass, c.warnings])).toEqual(AS_CASES.map((c) => [c.id, true, []]));
    expect(report).toMatchObject({ passed: AS_CASES.length, failed: 0, requiredFailed: 0, warnings: 0, ok: true, notes: [] });
    expect(byId(report, 'valid')).toMatchObject({ status: 200, actual: 'accepted (200)', error: null });
    for (const id of REJECTIONS) {
      expect(byId(report, id)).toMatchObject({ status: 400, error: 'invalid_grant', actual: 'rejected (400 invalid_grant)' });
    }
    // the replay was accepted the first time: the rejection is the replay check, not some other one
    expect(byId(report, 'jti-replay').first).toMatchObject({ status: 200 });
    expect((byId(report, 'jti-replay').body as { error_description: string }).error_description).toMatch(/already used/);
  });

  test('the ID-JAGs are signed by idjag as the IdP, with scopes from the AS metadata', () => {
    expect(report.idp).toEqual({ issuer: idjag.issuer, kid: idp.signingKey.kid, alg: 'ES256' });
    expect(report.target).toMatchObject({ issuer: idjag.demo!.asIssuer, resource: idjag.demo!.mcpResource, scope: 'todos.read todos.write', scopeSource: 'metadata' });
  });

  test('each faulty ID-JAG differs from the valid one by its fault, and each has a fresh jti but the replay', () => {
    const valid = byId(report, 'valid').request;
    expect(valid.header).toEqual({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: idp.signingKey.kid });
    expect(valid.claims).toEqual({
      iss: idjag.issuer, sub: 'idjag-conformance-kit', aud: idjag.demo!.asIssuer, client_id: DEMO_AS_CLIENT.clientId,
      jti: expect.any(String), iat: expect.any(Number), exp: (valid.claims.iat as number) + 300,
      resource: idjag.demo!.mcpResource, scope: 'todos.read todos.write',
    });
    expect(valid.params).toEqual({ resource: idjag.demo!.mcpResource });
    const req = (id: string) => byId(report, id).request;
    const now = Math.floor(Date.now() / 1000);
    expect(req('typ-wrong').header.typ).toBe('JWT');
    expect(req('alg-none').header).toEqual({ alg: 'none', typ: 'oauth-id-jag+jwt', kid: idp.signingKey.kid });
    expect(req('signature-unknown-key').header.kid).toMatch(/^conformance-unknown-/);
    expect(req('signature-forged-kid').header.kid).toBe(idp.signingKey.kid);
    expect(req('iss-other').claims.iss).toBe(OTHER_IDP);
    expect(req('aud-other-as').claims.aud).toBe(OTHER_AS);
    expect(req('aud-array-of-two').claims.aud).toEqual([idjag.demo!.asIssuer, OTHER_AS]);
    expect(req('client-id-other').claims.client_id).toBe(OTHER_CLIENT);
    expect(req('expired').claims.exp).toBeLessThan(now - 500);
    expect(req('iat-future').claims.iat).toBeGreaterThan(now + 500);
    expect(req('jti-missing').claims).not.toHaveProperty('jti');
    expect(req('resource-other')).toMatchObject({ claims: { resource: OTHER_RESOURCE }, params: { resource: OTHER_RESOURCE } });
    expect(req('scope-beyond')).toMatchObject({ claims: { scope: 'todos.read' }, params: { scope: 'todos.write' } });
    const jtis = report.cases.map((c) => c.request.claims.jti).filter((j) => j !== undefined);
    expect(new Set(jtis).size).toBe(AS_CASES.length - 1);
  });

  test('the report carries no usable token and never the client secret', () => {
    const json = JSON.stringify(report);
    expect(json).not.toContain(DEMO_AS_CLIENT.clientSecret);
    expect(json).not.toMatch(/eyJ[\w-]{20,}\.[\w-]{20,}\./);
    expect((byId(report, 'valid').body as { access_token: string }).access_token).toMatch(/^eyJ.{13}…\(\d+ chars\)$/);
    expect(byId(report, 'valid').request.assertion).toMatch(/…\(\d+ chars\)$/);
  });
});

test('an AS that rejects everything (wrong secret) fails valid and replay, and the report says why the rest prove nothing', async () => {
  const report = await runAsConformance({ ...demoTarget(), clientSecret: 'wrong-secret', idp });
  expect(failing(report)).toEqual(['valid', 'jti-replay']);
  expect(report.ok).toBe(false);
  expect(byId(report, 'valid')).toMatchObject({ status: 401, error: 'invalid_client' });
  expect(byId(report, 'jti-replay').note).toMatch(/first presentation was not accepted/);
  // the rejections "pass" but not cleanly: 401 invalid_client is not how a bad grant is refused
  expect(byId(report, 'typ-wrong').warnings).toEqual([
    expect.stringMatching(/error "invalid_client"; .* "invalid_grant"/),
    expect.stringMatching(/status 401/),
  ]);
  expect(report.notes).toEqual([expect.stringMatching(/valid ID-JAG was rejected/)]);
});

test('an AS that does not answer fails every case, without throwing', async () => {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const dead = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
  await new Promise((resolve) => probe.close(resolve));
  const report = await runAsConformance({ ...demoTarget(), tokenEndpoint: `${dead}/token`, issuer: dead, scope: 'a b', idp });
  expect(failing(report)).toEqual(AS_CASES.map((c) => c.id));
  for (const c of report.cases) expect(c).toMatchObject({ status: null, actual: expect.stringMatching(/^(first presentation )?no answer: /) });
});

describe('deliberately broken Resource ASes are caught by exactly the cases that target their flaw', () => {
  const caught: [flaw: Flaw, what: string, cases: string[]][] = [
    ['none', 'checks everything (the control: the fake is otherwise a correct AS)', []],
    ['typ', 'ignores typ', ['typ-wrong']],
    ['signature', 'never verifies the signature', ['alg-none', 'signature-unknown-key', 'signature-forged-kid']],
    ['iss', 'trusts any iss', ['iss-other']],
    ['aud', 'ignores aud', ['aud-other-as', 'aud-array-of-two']],
    ['aud-array', 'accepts an aud array that names it among others', ['aud-array-of-two']],
    ['client_id', 'ignores client_id', ['client-id-other']],
    ['exp', 'ignores exp', ['expired']],
    ['iat', 'ignores iat', ['iat-future']],
    ['jti', 'accepts an ID-JAG without jti', ['jti-missing']],
    ['replay', 'accepts replays', ['jti-replay']],
    ['resource', 'ignores resource', ['resource-other']],
    ['scope', 'issues requested scopes beyond the ID-JAG', ['scope-beyond']],
    ['server-error', 'answers 500 instead of invalid_grant', REJECTIONS],
  ];

  test.each(caught)('%s: an AS that %s', async (flaw, _what, cases) => {
    const report = await runAsConformance({ ...fakes.target(flaw), idp });
    expect(failing(report)).toEqual(cases);
    expect(report.failed).toBe(cases.length);
    // the advisory iat case alone does not make an AS non-conformant
    const required = cases.filter((id) => id !== 'iat-future');
    expect(report.requiredFailed).toBe(required.length);
    expect(report.ok).toBe(required.length === 0);
    expect(report.warnings).toBe(0);
  });

  test('a rejection with another error code than invalid_grant passes, with a warning on each case', async () => {
    const report = await runAsConformance({ ...fakes.target('error-code'), idp });
    expect(failing(report)).toEqual([]);
    expect(report.ok).toBe(true);
    expect(byId(report, 'valid').warnings).toEqual([]);
    for (const id of REJECTIONS) {
      expect(byId(report, id).warnings).toEqual([expect.stringMatching(/^error "invalid_request"; the draft and RFC 7523 §3\.1 name "invalid_grant"/)]);
    }
    expect(report.warnings).toBe(REJECTIONS.length);
  });

  test('an AS that narrows the scope to the ID-JAG\'s instead of refusing passes the scope case, with a note', async () => {
    const report = await runAsConformance({ ...fakes.target('narrows-scope'), idp });
    expect(failing(report)).toEqual([]);
    expect(byId(report, 'scope-beyond')).toMatchObject({
      status: 200, pass: true, note: expect.stringMatching(/issued only "todos\.read" \(within the ID-JAG's scope\)/),
    });
  });

  test('with one scope the scope case asks for an unknown one, and the report says the case is weaker', async () => {
    const report = await runAsConformance({ ...fakes.target('scope'), scope: 'todos.read', idp });
    expect(byId(report, 'scope-beyond')).toMatchObject({ pass: false, request: { params: { scope: 'idjag-conformance.not-granted' } } });
    expect(report.notes).toEqual([expect.stringMatching(/fewer than two scopes/)]);
  });
});

describe('npm run conformance (the CLI, as a child process)', () => {
  interface Run {
    code: number | null;
    stdout: string;
    stderr: string;
  }

  function cli(args: string[]): Promise<Run> {
    const child = spawn(process.execPath, ['src/conformance/cli.ts', ...args], {
      env: { ...process.env, NODE_OPTIONS: '', DATABASE: '', DATABASE_URL: '', ISSUER: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
  }

  const flagsFor = (t: Omit<AsConformanceOptions, 'idp'>) => [
    '--token-endpoint', t.tokenEndpoint, '--issuer', t.issuer, '--client-id', t.clientId, '--client-secret', t.clientSecret,
    ...(t.resource ? ['--resource', t.resource] : []), ...(t.scope ? ['--scope', t.scope] : []),
  ];
  const idjagSide = () => ['--database', idjag.config.database, '--idp-issuer', idjag.issuer];

  test('--json against the demo AS: exit 0 and a JSON report in which every case passed', async () => {
    const run = await cli(['as', ...flagsFor(demoTarget()), ...idjagSide(), '--json']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as AsConformanceReport;
    expect(report).toMatchObject({ ok: true, failed: 0, idp: { issuer: idjag.issuer, kid: idp.signingKey.kid } });
    expect(report.cases.map((c) => c.pass)).toEqual(AS_CASES.map(() => true));
  });

  test('the text report against an AS that accepts replays: exit 1, one FAIL line with expected, actual and section', async () => {
    const run = await cli(['as', ...flagsFor(fakes.target('replay')), ...idjagSide()]);
    expect(run.code).toBe(1);
    const lines = run.stdout.split('\n').filter((l) => /^(PASS|FAIL) /.test(l));
    expect(lines).toHaveLength(AS_CASES.length);
    expect(lines.filter((l) => l.startsWith('FAIL'))).toEqual([
      expect.stringMatching(/^FAIL {2}jti-replay +expected rejected, got accepted \(200\) +draft §4\.4; RFC 7523 §3 item 7/),
    ]);
    expect(run.stdout).toMatch(/15 cases: 14 passed, 1 failed \(1 required\)\. NOT CONFORMANT/);
  });

  test.each([
    ['a missing flag', (args: string[]) => args.filter((a, i) => a !== '--client-secret' && args[i - 1] !== '--client-secret'), /--client-secret is required/],
    ['no command', (args: string[]) => args.slice(1), /a command is required: as/],
    ['an unknown flag', (args: string[]) => [...args, '--bogus'], /Unknown option '--bogus'/],
    ['a token endpoint that is not a URL', (args: string[]) => args.map((a) => (a.endsWith('/token') ? 'not a url' : a)), /--token-endpoint not a url is not a URL/],
    ['no idjag database there', (args: string[]) => [...args, '--database', join(idjag.dir, 'missing', 'idjag.db')], /no idjag database at .*missing/],
  ])('exit 2 on %s', async (_name, change, message) => {
    const run = await cli(change(['as', ...flagsFor(demoTarget()), ...idjagSide()]));
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(message);
  });
});

test('formatAsReport names the cause under a failed case', async () => {
  const report = await runAsConformance({ ...fakes.target('replay'), idp });
  const text = formatAsReport(report);
  expect(text).toMatch(/^FAIL {2}jti-replay .*\n {6}the same valid ID-JAG presented a second time\n/m);
  expect(text).not.toMatch(/^PASS {2}valid .*\n {6}/m);
});

// ---- the fake Resource ASes: a small correct AS in which each variant skips exactly one check ----

type Flaw = 'none' | 'typ' | 'signature' | 'iss' | 'aud' | 'aud-array' | 'client_id' | 'exp' | 'iat' | 'jti' | 'replay' | 'resource'
  | 'scope' | 'narrows-scope' | 'error-code' | 'server-error';

/** an odd secret, so the kit's form-encoding of Basic credentials (RFC 6749 §2.3.1) is exercised */
const FAKE_CLIENT = { id: 'fake-agent', secret: 'fake secret:with/odd+chars' };
const FAKE_RESOURCE = 'https://mcp.fake.example/mcp';
const FAKE_SCOPES = 'todos.read todos.write';
const SKEW = 30;

interface FakeAses {
  target(flaw: Flaw): Omit<AsConformanceOptions, 'idp'>;
  close(): Promise<void>;
}

class Refusal extends Error {
  readonly status: number;
  readonly error: string;
  constructor(message: string, status = 400, error = 'invalid_grant') {
    super(message);
    this.status = status;
    this.error = error;
  }
}

/** One HTTP server, one AS per flaw at `/broken/{flaw}`, each with its own replay cache. */
async function startFakeAses(): Promise<FakeAses> {
  const jwks = createRemoteJWKSet(new URL(`${idjag.url}/jwks`));
  const seen = new Map<string, Set<string>>();
  const server: Server = createServer((req, res) => {
    void handle(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const flaw = /^\/broken\/([^/]+)\/token$/.exec(req.url ?? '')?.[1] as Flaw | undefined;
    let status = 200;
    let body: Record<string, unknown>;
    try {
      if (!flaw || req.method !== 'POST') throw new Refusal('not found', 404, 'not_found');
      const form = new URLSearchParams(await readBody(req));
      if (!seen.has(flaw)) seen.set(flaw, new Set());
      body = await grant(flaw, `${base}/broken/${flaw}`, form, req.headers.authorization, seen.get(flaw)!);
    } catch (err) {
      const refusal = err instanceof Refusal ? err : new Refusal(String(err));
      ({ status, body } = answerRefusal(flaw, refusal));
    }
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  }

  async function grant(flaw: Flaw, issuer: string, form: URLSearchParams, authorization: string | undefined, jtis: Set<string>) {
    authenticate(authorization);
    if (form.get('grant_type') !== JWT_BEARER) throw new Refusal('grant_type', 400, 'unsupported_grant_type');
    const assertion = form.get('assertion') ?? '';
    const header = decode(() => decodeProtectedHeader(assertion));
    if (flaw !== 'typ' && header.typ !== 'oauth-id-jag+jwt') throw new Refusal('typ');
    const claims = flaw === 'signature' ? decode(() => decodeJwt(assertion)) : await verify(assertion);
    if (flaw !== 'iss' && claims.iss !== idjag.issuer) throw new Refusal('iss');
    if (!audienceMatches(flaw, claims.aud, issuer)) throw new Refusal('aud');
    if (flaw !== 'client_id' && claims.client_id !== FAKE_CLIENT.id) throw new Refusal('client_id');
    const now = Math.floor(Date.now() / 1000);
    if (flaw !== 'exp' && (typeof claims.exp !== 'number' || claims.exp + SKEW <= now)) throw new Refusal('exp');
    if (flaw !== 'iat' && (typeof claims.iat !== 'number' || claims.iat - SKEW > now)) throw new Refusal('iat');
    if (flaw !== 'jti' && typeof claims.jti !== 'string') throw new Refusal('jti');
    const resource = form.get('resource') ?? claims.resource;
    if (flaw !== 'resource' && (resource !== FAKE_RESOURCE || (claims.resource !== undefined && claims.resource !== resource))) throw new Refusal('resource');
    const scope = grantedScope(flaw, form.get('scope'), claims.scope);
    if (flaw !== 'replay') {
      if (jtis.has(String(claims.jti))) throw new Refusal('replay');
      jtis.add(String(claims.jti));
    }
    return { access_token: randomUUID(), token_type: 'Bearer', expires_in: 60, scope };
  }

  async function verify(assertion: string): Promise<JWTPayload> {
    try {
      const { payload } = await compactVerify(assertion, jwks, { algorithms: ['ES256'] });
      return JSON.parse(new TextDecoder().decode(payload)) as JWTPayload;
    } catch {
      throw new Refusal('signature');
    }
  }

  return {
    target: (flaw) => ({
      tokenEndpoint: `${base}/broken/${flaw}/token`, issuer: `${base}/broken/${flaw}`,
      clientId: FAKE_CLIENT.id, clientSecret: FAKE_CLIENT.secret, resource: FAKE_RESOURCE, scope: FAKE_SCOPES,
    }),
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await closed;
    },
  };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => { text += chunk; });
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}

function authenticate(authorization: string | undefined) {
  const m = /^Basic (.+)$/.exec(authorization ?? '');
  const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
  const colon = decoded.indexOf(':');
  const formDecode = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
  if (colon < 0 || formDecode(decoded.slice(0, colon)) !== FAKE_CLIENT.id || formDecode(decoded.slice(colon + 1)) !== FAKE_CLIENT.secret) {
    throw new Refusal('client authentication failed', 401, 'invalid_client');
  }
}

function decode<T>(read: () => T): T {
  try {
    return read();
  } catch {
    throw new Refusal('not a JWT');
  }
}

function audienceMatches(flaw: Flaw, aud: unknown, issuer: string): boolean {
  if (flaw === 'aud') return true;
  if (Array.isArray(aud)) return flaw === 'aud-array' ? aud.includes(issuer) : aud.length === 1 && aud[0] === issuer;
  return aud === issuer;
}

function grantedScope(flaw: Flaw, requested: string | null, idJagScope: unknown): string {
  const split = (s: unknown) => (typeof s === 'string' ? s.split(' ').filter(Boolean) : []);
  const allowed = split(idJagScope);
  const asked = requested === null ? allowed : split(requested);
  if (flaw === 'scope') return asked.join(' ');
  const granted = asked.filter((s) => allowed.includes(s));
  if (granted.length) return granted.join(' ');
  // a legitimate alternative to refusing: issue what the ID-JAG allows (RFC 6749 §3.3)
  if (flaw === 'narrows-scope') return allowed.join(' ');
  throw new Refusal('scope');
}

/** How each variant words a refusal: the error-code and server-error variants answer a bad grant wrongly. */
function answerRefusal(flaw: Flaw | undefined, r: Refusal): { status: number; body: Record<string, unknown> } {
  if (r.error === 'invalid_grant' && flaw === 'error-code') return { status: 400, body: { error: 'invalid_request', error_description: r.message } };
  if (r.error === 'invalid_grant' && flaw === 'server-error') return { status: 500, body: { error: 'server_error' } };
  return { status: r.status, body: { error: r.error, error_description: r.message } };
}
