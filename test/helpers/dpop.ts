/**
 * DPoP proofs for tests (RFC 9449 §4.2), made with jose so each can be made wrong in exactly one way: another
 * htu or htm, an old iat, a private key in the jwk, a symmetric alg... `makeProof` makes a valid one unless told.
 */
import { randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { accessTokenHash } from '../../src/dpop/proof.ts';

export interface DpopKey {
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
  privateJwk: JWK;
  /** RFC 7638 SHA-256 thumbprint of the public key */
  jkt: string;
}

export async function dpopKey(alg = 'ES256'): Promise<DpopKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, ...(alg.startsWith('RS') || alg.startsWith('PS') ? { modulusLength: 2048 } : {}) });
  const publicJwk = await exportJWK(publicKey);
  return { alg, privateKey, publicJwk, privateJwk: await exportJWK(privateKey), jkt: await calculateJwkThumbprint(publicJwk) };
}

export interface ProofOptions {
  htu: string;
  htm?: string;
  /** epoch seconds; default now */
  iat?: number;
  jti?: string;
  nonce?: string;
  /** the access token the proof accompanies (its hash goes into ath) */
  accessToken?: string;
  /** replaces or (with undefined) removes header parameters */
  header?: Record<string, unknown>;
  /** replaces or (with undefined) removes claims */
  claims?: Record<string, unknown>;
  /** signs with this key instead of the one the jwk header names */
  signWith?: CryptoKey | Uint8Array;
}

const defined = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

export async function makeProof(key: DpopKey, o: ProofOptions): Promise<string> {
  const claims = defined({
    jti: o.jti ?? randomUUID(),
    htm: o.htm ?? 'POST',
    htu: o.htu,
    iat: o.iat ?? Math.floor(Date.now() / 1000),
    ...(o.nonce === undefined ? {} : { nonce: o.nonce }),
    ...(o.accessToken === undefined ? {} : { ath: accessTokenHash(o.accessToken) }),
    ...o.claims,
  });
  const header = defined({ typ: 'dpop+jwt', alg: key.alg, jwk: key.publicJwk, ...o.header });
  return new SignJWT(claims).setProtectedHeader(header as never).sign(o.signWith ?? key.privateKey);
}
