/**
 * The conformance kit's DPoP cases (draft §9.8.1.2, RFC 9449): ID-JAGs bound to the client's DPoP key, with a
 * proof by that key, without one, with another key's, and a proof presented twice. Against the demo Resource AS
 * every case passes; small fake ASes that each get one thing wrong are caught by exactly the cases aimed at it.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import {
  AS_CASES, DPOP_CASES, formatAsReport, JWT_BEARER, runAsConformance, type AsConformanceOptions, type AsConformanceReport, type ConformanceIdp,
} from '../src/conformance/as-kit.ts';
import { idjagConformanceIdp } from '../src/conformance/idjag-idp.ts';
import { DEMO_AS_CLIENT } from '../src/demo/seeded.ts';
import { DpopProofError, replayKey, singleProof, verifyDpopProof } from '../src/dpop/proof.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

let idjag: TestServer;
let idp: ConformanceIdp;

beforeAll(async () => {
  idjag = await startTestServer();
  idp = await idjagConformanceIdp(idjag.database.db, idjag.issuer);
});
afterAll(() => idjag?.dispose());

const DPOP_IDS = DPOP_CASES.map((c) => c.id);
const byId = (report: AsConformanceReport, id: string) => report.cases.find((c) => c.id === id)!;
const dpopFailing = (report: AsConformanceReport) => report.cases.filter((c) => DPOP_IDS.includes(c.id) && !c.pass).map((c) => c.id);

function demoTarget(): Omit<AsConformanceOptions, 'idp'> {
  const demo = idjag.demo!;
  return { tokenEndpoint: `${demo.asIssuer}/token`, issuer: demo.asIssuer, clientId: DEMO_AS_CLIENT.clientId, clientSecret: DEMO_AS_CLIENT.clientSecret, resource: demo.mcpResource };
}

test('the DPoP cases: the bound acceptance is advice, the refusals of a bound ID-JAG without its key are required', () => {
  expect(DPOP_IDS).toEqual(['dpop-bound', 'dpop-no-proof', 'dpop-other-key', 'dpop-proof-replay']);
  expect(DPOP_CASES.filter((c) => c.required).map((c) => c.id)).toEqual(['dpop-no-proof', 'dpop-other-key']);
  for (const c of DPOP_CASES) expect(c.section).toMatch(/RFC 9449/);
});

test('without the dpop option the kit runs only the base cases', async () => {
  const report = await runAsConformance({ ...demoTarget(), idp });
  expect(report.cases.map((c) => c.id)).toEqual(AS_CASES.map((c) => c.id));
  expect(report.cases.some((c) => c.request.dpop !== undefined)).toBe(false);
});

describe('against the demo Resource AS, with the DPoP cases', () => {
  let report: AsConformanceReport;
  beforeAll(async () => {
    report = await runAsConformance({ ...demoTarget(), idp, dpop: true });
  });

  test('every case passes, the DPoP ones included, without a warning', () => {
    expect(report.cases.map((c) => c.id)).toEqual([...AS_CASES, ...DPOP_CASES].map((c) => c.id));
    expect(report.cases.filter((c) => !c.pass || c.warnings.length).map((c) => c.id)).toEqual([]);
    expect(report).toMatchObject({ ok: true, requiredFailed: 0, notes: [] });
  });

  test('what the AS answered each DPoP case', () => {
    expect(byId(report, 'dpop-bound')).toMatchObject({ status: 200, body: { token_type: 'DPoP' } });
    expect(byId(report, 'dpop-no-proof')).toMatchObject({ status: 400, error: 'invalid_grant' });
    expect(byId(report, 'dpop-other-key')).toMatchObject({ status: 400, error: 'invalid_grant' });
    expect(byId(report, 'dpop-proof-replay')).toMatchObject({ status: 400, error: 'invalid_dpop_proof', first: { status: 200 } });
    expect((byId(report, 'dpop-proof-replay').body as { error_description: string }).error_description).toMatch(/already used/);
  });

  test('each request is bound to the client\'s key and says which key signed its proof', () => {
    const jkt = byId(report, 'dpop-bound').request.claims.cnf as { jkt: string };
    expect(jkt.jkt).toMatch(/^[\w-]{43}$/);
    for (const id of DPOP_IDS) expect(byId(report, id).request.claims.cnf).toEqual(jkt);
    expect(byId(report, 'dpop-bound').request.dpop).toBe(`signed by the key the ID-JAG is bound to (jkt ${jkt.jkt})`);
    expect(byId(report, 'dpop-no-proof').request.dpop).toBe('none');
    expect(byId(report, 'dpop-other-key').request.dpop).toMatch(/^signed by another key \(jkt [\w-]{43}\)$/);
    expect(byId(report, 'dpop-other-key').request.dpop).not.toContain(jkt.jkt);
    expect(byId(report, 'dpop-proof-replay').request.dpop).toMatch(/^the proof of the first presentation again/);
    // a fresh ID-JAG each time, the replay case's second one too
    const jtis = DPOP_IDS.map((id) => byId(report, id).request.claims.jti);
    expect(new Set(jtis).size).toBe(jtis.length);
  });

  test('the text report lists them like the others', () => {
    const text = formatAsReport(report);
    expect(text).toMatch(/^PASS {2}dpop-no-proof +expected rejected, got rejected \(400 invalid_grant\) +draft §9\.8\.1\.2; RFC 9449 §5$/m);
    expect(text).toMatch(/^PASS {2}dpop-bound \(advisory\) +expected accepted, got accepted \(200\)/m);
    expect(text).toMatch(`${AS_CASES.length + DPOP_CASES.length} cases: ${AS_CASES.length + DPOP_CASES.length} passed, 0 failed. CONFORMANT`);
  });
});

describe('fake Resource ASes, each wrong about one thing, are caught by the DPoP cases aimed at it', () => {
  let fakes: Fakes;
  beforeAll(async () => {
    fakes = await startFakes();
  });
  afterAll(() => fakes?.close());

  /** the flaw, what the AS does, the DPoP cases that fail, whether the required DPoP cases all pass */
  const caught: [Flaw, string, string[], boolean][] = [
    ['none', 'checks bindings, proofs and replays (the control)', [], true],
    ['ignores-cnf', 'ignores the ID-JAG\'s cnf', ['dpop-no-proof', 'dpop-other-key'], false],
    ['forgets-proofs', 'does not remember the proofs it accepted', ['dpop-proof-replay'], true],
    ['no-dpop', 'does not support DPoP and refuses every bound ID-JAG', ['dpop-bound', 'dpop-proof-replay'], true],
  ];

  test.each(caught.map(([flaw, what, cases, ok]) => ({ flaw, what, cases, ok })))('$flaw: an AS that $what', async ({ flaw, cases, ok }) => {
    const report = await runAsConformance({ ...fakes.target(flaw), idp, dpop: true });
    expect(dpopFailing(report)).toEqual(cases);
    // the fakes skip the base checks (the other test file's fakes are about those): only the DPoP verdicts count here
    const requiredDpopFailed = report.cases.filter((c) => DPOP_IDS.includes(c.id) && c.required && !c.pass);
    expect(requiredDpopFailed.length === 0).toBe(ok);
    if (flaw === 'no-dpop') {
      expect(report.notes).toEqual([expect.stringMatching(/may not support DPoP/)]);
      expect(byId(report, 'dpop-proof-replay').note).toMatch(/first presentation was not accepted/);
    }
  });
});

test('npm run conformance -- as --dpop --json against the demo AS: exit 0, the DPoP cases in the report', async () => {
  const t = demoTarget();
  const child = spawn(process.execPath, [
    'src/conformance/cli.ts', 'as', '--token-endpoint', t.tokenEndpoint, '--issuer', t.issuer, '--client-id', t.clientId,
    '--client-secret', t.clientSecret, '--resource', t.resource!, '--database', idjag.config.database, '--idp-issuer', idjag.issuer, '--dpop', '--json',
  ], { env: { ...process.env, NODE_OPTIONS: '', DATABASE: '', DATABASE_URL: '', ISSUER: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  const code = await new Promise((resolve) => child.once('close', resolve));
  expect(code).toBe(0);
  const report = JSON.parse(stdout) as AsConformanceReport;
  expect(report.cases.filter((c) => DPOP_IDS.includes(c.id)).map((c) => [c.id, c.pass])).toEqual(DPOP_IDS.map((id) => [id, true]));
});

// ---- fake Resource ASes: just enough of a JWT-bearer grant to judge the DPoP cases ----

type Flaw = 'none' | 'ignores-cnf' | 'forgets-proofs' | 'no-dpop';

const FAKE_CLIENT = { id: 'fake-agent', secret: 'fake-agent-secret' };
const FAKE_RESOURCE = 'https://mcp.fake.example/mcp';

interface Fakes {
  target(flaw: Flaw): Omit<AsConformanceOptions, 'idp'>;
  close(): Promise<void>;
}

class Refusal extends Error {
  readonly error: string;
  constructor(error: string, message: string) {
    super(message);
    this.error = error;
  }
}

/** One server, one AS per flaw at `/fake/{flaw}`. The ID-JAG's signature and claims are idjag's business here. */
async function startFakes(): Promise<Fakes> {
  const seen = new Map<Flaw, Set<string>>();
  const server: Server = createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const flaw = /^\/fake\/([^/]+)\/token$/.exec(req.url ?? '')?.[1] as Flaw;
    let status = 200;
    let body: Record<string, unknown>;
    try {
      const form = new URLSearchParams(await new Promise<string>((resolve) => {
        let text = '';
        req.on('data', (d: Buffer) => { text += d.toString(); });
        req.on('end', () => resolve(text));
      }));
      if (req.headers.authorization !== `Basic ${Buffer.from(`${FAKE_CLIENT.id}:${FAKE_CLIENT.secret}`).toString('base64')}`) throw new Refusal('invalid_client', 'who are you');
      if (form.get('grant_type') !== JWT_BEARER) throw new Refusal('unsupported_grant_type', 'jwt-bearer only');
      const claims = decodeJwt(form.get('assertion') ?? '');
      const jkt = (claims.cnf as { jkt?: string } | undefined)?.jkt;
      if (jkt !== undefined && flaw === 'no-dpop') throw new Refusal('invalid_grant', 'bound ID-JAGs are not supported here');
      let proven: string | undefined;
      const header = singleProof(req.headersDistinct.dpop);
      if (header !== undefined && flaw !== 'no-dpop') {
        const proof = await verifyDpopProof(header, { htm: 'POST', htu: `${base}/fake/${flaw}/token`, now: Math.floor(Date.now() / 1000), maxAge: 60, skew: 30 });
        if (flaw !== 'forgets-proofs') {
          const remembered = seen.get(flaw) ?? new Set();
          seen.set(flaw, remembered);
          if (remembered.has(replayKey(proof))) throw new Refusal('invalid_dpop_proof', 'proof already used');
          remembered.add(replayKey(proof));
        }
        proven = proof.jkt;
      }
      if (jkt !== undefined && flaw !== 'ignores-cnf' && proven !== jkt) throw new Refusal('invalid_grant', 'not proven by the bound key');
      body = { access_token: randomUUID(), token_type: proven ? 'DPoP' : 'Bearer', expires_in: 60, scope: claims.scope };
    } catch (err) {
      status = 400;
      body = err instanceof Refusal ? { error: err.error, error_description: err.message }
        : { error: err instanceof DpopProofError ? err.error : 'invalid_grant', error_description: String(err) };
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  return {
    target: (flaw) => ({
      tokenEndpoint: `${base}/fake/${flaw}/token`, issuer: `${base}/fake/${flaw}`, clientId: FAKE_CLIENT.id, clientSecret: FAKE_CLIENT.secret,
      resource: FAKE_RESOURCE, scope: 'todos.read todos.write',
    }),
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await closed;
    },
  };
}
