import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { DpopProofError, replayKeepUntil, replayKey, singleProof, verifyDpopProof } from '../dpop/proof.ts';
import type { CheckList } from './checks.ts';
import { CLOCK_SKEW } from './subject.ts';

/**
 * The request's DPoP proof (RFC 9449; draft §9.8.1), as the pipeline's port: at the token endpoint the `DPoP`
 * header, checked, and its `jti` remembered in a store every node shares; in the simulator a proof assumed
 * present (or none). The pipeline binds the ID-JAG to the key a proof shows (`cnf.jkt`).
 */

/** The key a proof shows possession of: its RFC 7638 thumbprint, the ID-JAG's `cnf.jkt`. */
export interface Possession {
  jkt: string;
}

export interface ProofSource {
  /** the request carries a DPoP header (valid or not): the dpop_proof check runs */
  readonly presented: boolean;
  /** checks the proof; fails the dpop_proof check when it is not acceptable */
  verify(checks: CheckList, now: number): Promise<Possession>;
}

/** A request without a DPoP header. */
export const NO_PROOF: ProofSource = {
  presented: false,
  verify: () => Promise.reject(new Error('no DPoP proof was presented')),
};

/** Proofs are made right before their request: one older than this is refused (RFC 9449 §11.1). */
export const PROOF_MAX_AGE = 60;

/** Where accepted proofs are remembered until they would be refused as stale anyway: one store for every node. */
export interface ProofReplays {
  /** true the first time this key is seen (atomically: of two nodes racing on one proof, one gets true) */
  firstUse(key: string, keepUntil: number): Promise<boolean>;
}

/** Server-provided nonces (RFC 9449 §8): a client's proof must carry a recent one. */
export interface DpopNonces {
  /** the nonce to hand out now (the DPoP-Nonce header) */
  current(now: number): string;
  accepts(nonce: string | undefined, now: number): boolean;
}

export interface HeaderProofOptions {
  /** the DPoP header's values, one per field line */
  headers: readonly string[] | undefined;
  /** the token endpoint, as the configured issuer names it: the proof's `htu` */
  htu: string;
  replays: ProofReplays;
  nonces?: DpopNonces | undefined;
}

/** The token endpoint's proof: the request's DPoP header. */
export function headerProof(o: HeaderProofOptions): ProofSource {
  return {
    presented: (o.headers?.length ?? 0) > 0,
    async verify(checks, now) {
      // a use_dpop_nonce refusal gets the nonce to use in its DPoP-Nonce header (the grant adds it to every answer)
      const fail = (err: DpopProofError): never => checks.fail('dpop_proof', err.message, err.error === 'use_dpop_nonce' ? { error: 'use_dpop_nonce', reason: 'dpop_nonce' } : {});
      let proof;
      try {
        proof = await verifyDpopProof(singleProof(o.headers)!, {
          htm: 'POST', htu: o.htu, now, maxAge: PROOF_MAX_AGE, skew: CLOCK_SKEW,
          nonce: o.nonces && ((n) => o.nonces!.accepts(n, now)),
        });
      } catch (err) {
        if (err instanceof DpopProofError) return fail(err);
        throw err;
      }
      if (!(await o.replays.firstUse(replayKey(proof), replayKeepUntil(proof, PROOF_MAX_AGE)))) {
        checks.fail('dpop_proof', 'this DPoP proof was already used (its jti was seen before); sign a new proof for every request', {
          explanation: `replayed DPoP proof: jti ${JSON.stringify(proof.jti.slice(0, 200))} of key ${proof.jkt}`, reason: 'dpop_replay',
        });
      }
      return { jkt: proof.jkt };
    },
  };
}

/** The simulator's proof: a valid proof by the key with this thumbprint is assumed to accompany the request. */
export function assumedProof(jkt: string): ProofSource {
  return { presented: true, verify: async () => ({ jkt }) };
}

const NONCE_STEP = 60;
/** A nonce is accepted for the step it was issued in and the four before: up to five minutes. */
const NONCE_STEPS_ACCEPTED = 5;

/**
 * Stateless nonces every node can check: the time step, and an HMAC of it under a key derived from a secret
 * all nodes share (the cookie keys). No store, and a nonce from one node is good on every other.
 */
export function dpopNonces(sharedSecret: string): DpopNonces {
  const key = Buffer.from(hkdfSync('sha256', sharedSecret, 'idjag', 'idjag DPoP nonce', 32));
  const mac = (step: number) => createHmac('sha256', key).update(String(step)).digest('base64url');
  const stepOf = (now: number) => Math.floor(now / NONCE_STEP);
  return {
    current: (now) => `${stepOf(now)}.${mac(stepOf(now))}`,
    accepts(nonce, now) {
      const m = nonce === undefined ? null : /^(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(nonce);
      if (!m) return false;
      const step = Number(m[1]);
      const age = stepOf(now) - step;
      if (age < 0 || age >= NONCE_STEPS_ACCEPTED) return false;
      return timingSafeEqual(Buffer.from(m[2]!), Buffer.from(mac(step)));
    },
  };
}
