import { createHmac, createSecretKey, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const scrypt = (password: string, salt: Buffer, keylen: number, options: ScryptOptions) =>
  new Promise<Buffer>((resolve, reject) => {
    scryptCb(password, salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
  });

// N=2^15, r=8: ~32 MiB and a few tens of milliseconds per hash on this class of machine (OWASP's scrypt floor).
const PARAMS = { N: 32768, r: 8, p: 1 } as const;
const KEYLEN = 32;
const maxmem = (p: { N: number; r: number }) => 128 * p.N * p.r * 2;

/** `scrypt$N$r$p$salt$hash`, salt and hash base64url: self-describing, so parameters can rise later. */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(secret, salt, KEYLEN, { ...PARAMS, maxmem: maxmem(PARAMS) });
  return ['scrypt', PARAMS.N, PARAMS.r, PARAMS.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const salt = Buffer.from(parts[4]!, 'base64url');
  const expected = Buffer.from(parts[5]!, 'base64url');
  const actual = await scrypt(secret, salt, expected.length, { N, r, p, maxmem: maxmem({ N, r }) });
  return timingSafeEqual(actual, expected);
}

/**
 * A hash to burn the same time as a real verification when the account does not exist, so response time
 * does not tell which usernames exist.
 */
let dummyHash: Promise<string> | undefined;
export async function verifyAgainstNothing(secret: string): Promise<false> {
  dummyHash ??= hashSecret(randomBytes(16).toString('hex'));
  await verifySecret(secret, await dummyHash);
  return false;
}

/** A random secret with 256 bits of entropy, for generated client secrets and keys. */
export const generateSecret = (): string => randomBytes(32).toString('base64url');

/**
 * Client secrets are checked on every token request, and a slow KDF on each would cap the token endpoint at
 * a few dozen requests per second per core. After one successful scrypt check, remember (in memory only) an
 * HMAC of the presented secret under a per-process key, bound to the stored hash: rotating the secret changes
 * the hash and so invalidates the entry, and a memory dump yields no secret.
 */
export class VerifiedSecretCache {
  // a KeyObject made once: HMAC with a raw Buffer key re-imports the key on every call
  readonly #key = createSecretKey(randomBytes(32));
  readonly #entries = new Map<string, true>();
  readonly #max: number;

  constructor(max = 10_000) {
    this.#max = max;
  }

  async verify(secret: string, stored: string): Promise<boolean> {
    const entry = createHmac('sha256', this.#key).update(stored).update('\0').update(secret).digest('base64url');
    if (this.#entries.has(entry)) return true;
    const ok = await verifySecret(secret, stored);
    if (ok) {
      if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!);
      this.#entries.set(entry, true);
    }
    return ok;
  }
}
