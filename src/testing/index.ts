/**
 * idjag inside a client author's test suite (`import { startIdjag } from 'idjag/testing'`): a real idjag in
 * the test's own process, on a free port, on an in-memory database, seeded with the author's document; users
 * signed in for a client without a browser (development mode only); the audit log of the run.
 */
// first: on a Node too old for idjag, a clear error instead of a crash in a native addon
import './node-guard.ts';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Level } from 'pino';
import type { z } from 'zod';
import type { ConfigDocument } from '../admin/document.ts';
import { AuditFilter, getAuditEntry, searchAudit, type AuditEntry } from '../admin/audit-query.ts';
import { loadConfig, type Config } from '../config/index.ts';
import { startIdjag as startServer, type Idjag } from '../main.ts';
import { DEFAULT_SEED_FILE } from '../package-root.ts';
import { readSeed } from '../../seed/index.ts';
import { basicAuth, SignInFailed, signInOverHttp, type SignedInTokens } from './sign-in.ts';

export { SignInFailed, type SignedInTokens };
export type { AuditEntry, AuditCheck, AuditSummary } from '../admin/audit-query.ts';

/** A seed document as written: groups, users (with passwords), clients (with secrets), Resource ASes and rules. */
export type SeedDocument = z.input<typeof ConfigDocument>;

export interface IdjagTestOptions {
  /** a path to a seed document (JSON), or the document itself; default: idjag's development seed */
  seed?: string | SeedDocument;
  /** ':memory:' (the default: SQLite in memory, gone at close()), a SQLite file path, or a postgres:// URL of an existing database */
  database?: string;
  /** default 0: a free port */
  port?: number;
  /** default 127.0.0.1 */
  host?: string;
  /** default http://{host}:{port actually bound} */
  issuer?: string;
  /** serve the demo Resource AS and MCP server under the issuer (`/demo/as`, `/demo/mcp`); default true */
  demo?: boolean;
  /** production mode; default: NODE_ENV is production. signIn() is refused in production mode */
  production?: boolean;
  /** idjag's own log (pino JSON on stdout); default silent */
  logLevel?: Level | 'silent';
  /** any other setting, as named in the configuration (tokenRateLimit, loginAccountFailures, errors...) */
  settings?: Partial<Omit<Config, 'seedFile'>>;
}

export interface SignInOptions {
  username: string;
  clientId: string;
  /** default: the user's password in the seed document */
  password?: string;
  /** default: the client's secret in the seed document (none for a public client) */
  clientSecret?: string;
  /** default: the client's first redirect URI in the seed document (it is never contacted) */
  redirectUri?: string;
  /** default 'openid email profile offline_access' */
  scope?: string;
  /** for a client that is not first-party: answer its consent page with Allow (default) or Deny */
  consent?: boolean;
}

export interface ExchangeOptions {
  /** the ID Token (or, with subjectTokenType 'refresh_token', the refresh token) to exchange */
  subjectToken: string;
  subjectTokenType?: 'id_token' | 'refresh_token';
  clientId: string;
  /** default: the client's secret in the seed document */
  clientSecret?: string;
  /** the Resource AS's issuer (or an alias) */
  audience: string;
  /** the MCP server(s) */
  resource?: string | string[];
  scope?: string;
}

export interface ExchangeResult {
  /** the HTTP status: 200 with an ID-JAG in body.access_token, or an OAuth error in body.error */
  status: number;
  body: Record<string, unknown>;
}

export interface IdjagTestServer {
  /** the issuer: every token's `iss` and the base of discovery (`{issuer}/.well-known/openid-configuration`) */
  issuer: string;
  /** where the server listens (the issuer, unless an issuer was given) */
  url: string;
  /** signs a user in for a client through idjag's real login, without a browser; refused in production mode */
  signIn(options: SignInOptions): Promise<SignedInTokens>;
  /** an RFC 8693 token exchange for an ID-JAG at idjag's token endpoint, as a client would send it */
  exchange(options: ExchangeOptions): Promise<ExchangeResult>;
  /** every token-exchange decision of this server so far, newest first, each with its checks */
  audit(filter?: AuditQuery): Promise<AuditEntry[]>;
  /** stops the server and deletes its temporary files */
  close(): Promise<void>;
}

export type AuditQuery = z.input<typeof AuditFilter>;

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';

/** Starts idjag for a test. Call close() in the test's afterAll. */
export async function startIdjag(options: IdjagTestOptions = {}): Promise<IdjagTestServer> {
  const scratch = await mkdtemp(join(tmpdir(), 'idjag-testing-'));
  let idjag: Idjag | undefined;
  try {
    const seedFile = await seedFileFor(options.seed, scratch);
    const config = loadConfig([], {}, {
      port: options.port ?? 0,
      host: options.host ?? '127.0.0.1',
      database: options.database ?? ':memory:',
      logLevel: options.logLevel ?? 'silent',
      production: options.production ?? process.env.NODE_ENV === 'production',
      demo: options.demo ?? true,
      // close() at once: no load balancer to drain
      drainSeconds: 0,
      ...(options.issuer ? { issuer: options.issuer } : {}),
      ...options.settings,
      seedFile,
      seedOnEmpty: true,
    });
    idjag = await startServer(config, { log: pino({ level: config.logLevel }) });
    const seed = readSeed(seedFile, idjag.issuer);
    return testServer(idjag, seed, scratch);
  } catch (err) {
    await idjag?.close();
    await rm(scratch, { recursive: true, force: true });
    throw err;
  }
}

async function seedFileFor(seed: IdjagTestOptions['seed'], scratch: string): Promise<string> {
  if (seed === undefined) return DEFAULT_SEED_FILE;
  if (typeof seed === 'string') return seed;
  const file = join(scratch, 'seed.json');
  await writeFile(file, JSON.stringify(seed));
  return file;
}

function testServer(idjag: Idjag, seed: ConfigDocument, scratch: string): IdjagTestServer {
  const user = (username: string) => seed.users.find((u) => u.username === username);
  const client = (clientId: string) => seed.clients.find((c) => c.client_id === clientId);
  const { issuer, url } = idjag;

  return {
    issuer,
    url,

    async signIn(o) {
      if (idjag.config.production) {
        throw new SignInFailed('signIn() signs users in without a browser, for development and tests only: refused in production mode');
      }
      const password = o.password ?? user(o.username)?.password;
      if (password === undefined) throw new SignInFailed(`no password for ${o.username}: the seed document has none; pass { password }`);
      const seeded = client(o.clientId);
      const redirectUri = o.redirectUri ?? seeded?.redirect_uris?.[0];
      if (!redirectUri) throw new SignInFailed(`no redirect URI for ${o.clientId}: the seed document has none; pass { redirectUri }`);
      return signInOverHttp({
        url, issuer, password, redirectUri,
        username: o.username,
        clientId: o.clientId,
        clientSecret: o.clientSecret ?? seeded?.client_secret,
        authMethod: seeded?.token_endpoint_auth_method,
        scope: o.scope ?? 'openid email profile offline_access',
        consent: o.consent ?? true,
      });
    },

    async exchange(o) {
      const form = new URLSearchParams({
        grant_type: TOKEN_EXCHANGE,
        requested_token_type: ID_JAG,
        subject_token_type: `urn:ietf:params:oauth:token-type:${o.subjectTokenType ?? 'id_token'}`,
        subject_token: o.subjectToken,
        audience: o.audience,
      });
      for (const r of [o.resource ?? []].flat()) form.append('resource', r);
      if (o.scope !== undefined) form.set('scope', o.scope);
      const secret = o.clientSecret ?? client(o.clientId)?.client_secret;
      const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
      if (secret === undefined) form.set('client_id', o.clientId);
      else headers.authorization = basicAuth(o.clientId, secret);
      const res = await fetch(new URL('/token', url), { method: 'POST', headers, body: form });
      return { status: res.status, body: await res.json() as Record<string, unknown> };
    },

    async audit(filter = {}) {
      const f = AuditFilter.parse(filter);
      const entries: AuditEntry[] = [];
      let cursor: string | undefined;
      do {
        const page = await searchAudit(idjag.database.db, { ...f, limit: 500, ...(cursor ? { cursor } : {}) });
        for (const item of page.items) entries.push(await getAuditEntry(idjag.database.db, item.id));
        cursor = page.next_cursor ?? undefined;
      } while (cursor);
      return entries;
    },

    async close() {
      await idjag.close();
      await rm(scratch, { recursive: true, force: true });
    },
  };
}
