/**
 * The dpop_proof step of the exchange pipeline over in-memory ports: when it is planned, what binds the ID-JAG
 * (cnf.jkt), what the audit row says, and how the token endpoint's proof port (headerProof) refuses.
 */
import { DECISION_CHECKS, DPOP_CHECKS, REQUEST_CHECKS } from '../../src/exchange/checks.ts';
import { previewMinter } from '../../src/exchange/mint.ts';
import { runExchange, type ExchangePorts, type ExchangeResult } from '../../src/exchange/pipeline.ts';
import { assumedProof, dpopNonces, headerProof, type ProofReplays } from '../../src/exchange/proof.ts';
import { assumedSubject } from '../../src/exchange/subject.ts';
import { dpopKey, makeProof, type DpopKey } from '../helpers/dpop.ts';
import { input, ISSUER, mcpServer, resourceServer, rule, user } from './fixtures.ts';

const HTU = `${ISSUER}/token`;
let key: DpopKey;
beforeAll(async () => {
  key = await dpopKey();
});

/** The real clock: proofs made now must be fresh for the pipeline. */
const now = () => Math.floor(Date.now() / 1000);

function ports(over: Partial<ExchangePorts> = {}): ExchangePorts & { stages: string[] } {
  const stages: string[] = [];
  return {
    subjects: assumedSubject('sub-alice', now() - 30),
    directory: { member: async (sub) => (sub === 'sub-alice' ? { user: user(), groups: [] } : undefined) },
    catalog: { resourceServer: async (aud) => (aud === resourceServer().issuer ? resourceServer() : undefined), mcpServers: async () => [mcpServer()], audienceSubject: async () => undefined },
    rules: { rulesFor: async () => [rule('r1')] },
    minter: previewMinter,
    issuer: ISSUER,
    clock: now,
    stage: (name) => stages.push(name),
    stages,
    ...over,
  };
}

/** An in-memory replay store: first use of a key wins. */
function memoryReplays(): ProofReplays & { keys: Set<string> } {
  const keys = new Set<string>();
  return { keys, firstUse: async (k) => (keys.has(k) ? false : (keys.add(k), true)) };
}

const dpopCheck = (r: ExchangeResult) => r.record.checks.find((c) => c.name === 'dpop_proof');

describe('planned only when DPoP concerns the request', () => {
  test('no proof from a client that does not require one: no dpop_proof check, an unbound ID-JAG', async () => {
    const result = await runExchange(input(), ports());
    expect(result.record.checks.map((c) => c.name)).toEqual([...REQUEST_CHECKS, ...DECISION_CHECKS].map((d) => d.name));
    expect(result.outcome.kind === 'issued' && result.outcome.claims.cnf).toBeUndefined();
  });

  test('a proof: dpop_proof runs right after the request checks, passes naming the key, and binds the ID-JAG', async () => {
    const result = await runExchange(input(), ports({ proofs: assumedProof(key.jkt) }));
    expect(result.record.checks.map((c) => c.name)).toEqual([...REQUEST_CHECKS, ...DPOP_CHECKS, ...DECISION_CHECKS].map((d) => d.name));
    expect(dpopCheck(result)).toEqual({ name: 'dpop_proof', status: 'passed', message: `the ID-JAG is bound to the proof's key: cnf.jkt ${key.jkt} (RFC 7638 thumbprint)` });
    expect(result.outcome.kind === 'issued' && result.outcome.claims.cnf).toEqual({ jkt: key.jkt });
  });

  test('a client registered with dpop_bound_access_tokens and no proof: invalid_dpop_proof, before the subject is looked at', async () => {
    const p = ports();
    const result = await runExchange(input({}, { dpopBound: true }), p);
    expect(result.record).toMatchObject({ decision: 'denied', reason: 'dpop_proof', error: 'invalid_dpop_proof' });
    expect(dpopCheck(result)).toMatchObject({ status: 'failed', message: expect.stringMatching(/registered with dpop_bound_access_tokens.*RFC 9449 §5\.2/) });
    expect(result.record.checks.filter((c) => DECISION_CHECKS.some((d) => d.name === c.name)).every((c) => c.status === 'not_reached')).toBe(true);
    expect(result.record.sub).toBeUndefined();
    expect(p.stages).toEqual(['request', 'end']);
  });
});

describe('the token endpoint\'s proof (headerProof)', () => {
  test('a valid proof binds the ID-JAG; the same proof again is a replay (reason dpop_replay)', async () => {
    const replays = memoryReplays();
    const proof = await makeProof(key, { htu: HTU });
    const first = await runExchange(input(), ports({ proofs: headerProof({ headers: [proof], htu: HTU, replays }) }));
    expect(first.outcome.kind === 'issued' && first.outcome.claims.cnf).toEqual({ jkt: key.jkt });
    expect(replays.keys.size).toBe(1);
    const again = await runExchange(input(), ports({ proofs: headerProof({ headers: [proof], htu: HTU, replays }) }));
    expect(again.record).toMatchObject({ decision: 'denied', reason: 'dpop_replay', error: 'invalid_dpop_proof' });
    expect(dpopCheck(again)).toMatchObject({ status: 'failed', message: expect.stringMatching(/already used/), explanation: expect.stringContaining(key.jkt) });
  });

  test('an invalid proof is refused before its jti is remembered', async () => {
    const replays = memoryReplays();
    const proof = await makeProof(key, { htu: 'https://elsewhere.example/token' });
    const result = await runExchange(input(), ports({ proofs: headerProof({ headers: [proof], htu: HTU, replays }) }));
    expect(result.record).toMatchObject({ decision: 'denied', reason: 'dpop_proof', error: 'invalid_dpop_proof' });
    expect(replays.keys.size).toBe(0);
  });

  test('two DPoP headers are refused', async () => {
    const proofs = [await makeProof(key, { htu: HTU }), await makeProof(key, { htu: HTU })];
    const result = await runExchange(input(), ports({ proofs: headerProof({ headers: proofs, htu: HTU, replays: memoryReplays() }) }));
    expect(dpopCheck(result)).toMatchObject({ status: 'failed', message: expect.stringMatching(/2 DPoP headers/) });
  });

  test('with nonces, a proof without one is use_dpop_nonce (reason dpop_nonce); with the current one it binds', async () => {
    const nonces = dpopNonces('the cookie key');
    const needs = (proof: string) => ports({ proofs: headerProof({ headers: [proof], htu: HTU, replays: memoryReplays(), nonces }) });
    const refused = await runExchange(input(), needs(await makeProof(key, { htu: HTU })));
    expect(refused.record).toMatchObject({ decision: 'denied', reason: 'dpop_nonce', error: 'use_dpop_nonce' });
    const bound = await runExchange(input(), needs(await makeProof(key, { htu: HTU, nonce: nonces.current(now()) })));
    expect(bound.outcome.kind === 'issued' && bound.outcome.claims.cnf).toEqual({ jkt: key.jkt });
  });

  test('a replay store that fails decides nothing: the exchange fails (503), it is not a refusal', async () => {
    const broken: ProofReplays = { firstUse: () => Promise.reject(new Error('database unreachable')) };
    const result = await runExchange(input(), ports({ proofs: headerProof({ headers: [await makeProof(key, { htu: HTU })], htu: HTU, replays: broken }) }));
    expect(result.outcome.kind).toBe('failed');
    expect(result.record).toMatchObject({ decision: 'error', reason: 'internal_error', error: 'temporarily_unavailable' });
  });
});
