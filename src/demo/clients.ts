import { createHmac, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { invalidClient } from './errors.ts';

/**
 * A client of the demo Resource AS, with its credentials *at this AS* (not at the IdP). Give `secret_hash`
 * (from `hashDemoSecret`) in real configuration; a plain `client_secret` is hashed at start and not kept.
 */
export interface DemoClient {
  client_id: string;
  secret_hash?: string;
  client_secret?: string;
}

const scrypt = (password: string, salt: Buffer, keylen: number, options: ScryptOptions) =>
  new Promise<Buffer>((resolve, reject) => {
    scryptCb(password, salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
  });

const PARAMS = { N: 32768, r: 8, p: 1 } as const;
const KEYLEN = 32;
const maxmem = (p: { N: number; r: number }) => 128 * p.N * p.r * 2;

/** `scrypt$N$r$p$salt$hash` (base64url): the same self-describing format the IdP uses for its own secrets. */
export async function hashDemoSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(secret, salt, KEYLEN, { ...PARAMS, maxmem: maxmem(PARAMS) });
  return ['scrypt', PARAMS.N, PARAMS.r, PARAMS.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

async function secretMatches(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const expected = Buffer.from(parts[5]!, 'base64url');
  const actual = await scrypt(secret, Buffer.from(parts[4]!, 'base64url'), expected.length, { N, r, p, maxmem: maxmem({ N, r }) });
  return timingSafeEqual(actual, expected);
}

export interface BasicCredentials {
  clientId: string;
  secret: string;
}

/**
 * RFC 6749 §2.3.1: id and secret are form-urlencoded, then joined by ':' and base64-encoded. Anything else
 * is a client authentication failure, never an exception.
 */
export function parseBasic(header: string | undefined, realm: string): BasicCredentials {
  const m = /^Basic[ ]+([A-Za-z0-9+/]+={0,2})[ ]*$/i.exec(header ?? '');
  if (!m) {
    throw invalidClient(header
      ? 'the Authorization header is not HTTP Basic with base64 credentials; this AS supports only client_secret_basic'
      : 'client authentication required: send the Resource-AS client id and secret with HTTP Basic (client_secret_basic)', realm);
  }
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) throw invalidClient('the Basic credentials have no ":" between client id and secret', realm);
  try {
    const formDecode = (s: string) => decodeURIComponent(s.replace(/\+/g, '%20'));
    return { clientId: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
  } catch {
    throw invalidClient('the Basic credentials are not valid form-urlencoded text (RFC 6749 §2.3.1)', realm);
  }
}

/**
 * Checks client secrets against scrypt hashes. scrypt is deliberately slow, so a secret that verified once is
 * remembered as an HMAC under a per-process key, bound to the hash (a changed secret misses the cache).
 */
export class DemoClientRegistry {
  readonly #hashes: Promise<Map<string, string>>;
  readonly #cacheKey = randomBytes(32);
  readonly #verified = new Set<string>();
  #dummy: Promise<string> | undefined;

  constructor(clients: DemoClient[]) {
    this.#hashes = Promise.all(clients.map(async (c) => {
      const hash = c.secret_hash ?? (c.client_secret !== undefined ? await hashDemoSecret(c.client_secret) : undefined);
      if (!hash) throw new Error(`demo Resource AS client ${c.client_id} needs secret_hash or client_secret`);
      return [c.client_id, hash] as const;
    })).then((entries) => new Map(entries));
    // surfaced on the first request; do not crash the process as an unhandled rejection meanwhile
    this.#hashes.catch(() => undefined);
  }

  /** Resolves to the authenticated client id, or throws invalid_client. */
  async authenticate(credentials: BasicCredentials, realm: string): Promise<string> {
    const stored = (await this.#hashes).get(credentials.clientId);
    // an unknown client costs one scrypt too, so timing does not tell which client ids exist
    const ok = stored ? await this.#verify(credentials.secret, stored) : await this.#burn(credentials.secret);
    if (!ok) throw invalidClient('client authentication failed: unknown client or wrong secret', realm);
    return credentials.clientId;
  }

  async #verify(secret: string, stored: string): Promise<boolean> {
    const entry = createHmac('sha256', this.#cacheKey).update(stored).update('\0').update(secret).digest('base64url');
    if (this.#verified.has(entry)) return true;
    const ok = await secretMatches(secret, stored);
    if (ok) this.#verified.add(entry);
    return ok;
  }

  async #burn(secret: string): Promise<false> {
    this.#dummy ??= hashDemoSecret(randomBytes(16).toString('hex'));
    await secretMatches(secret, await this.#dummy);
    return false;
  }
}
