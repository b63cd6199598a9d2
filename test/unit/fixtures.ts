/**
 * Shared fixtures of the unit tests: requests, users, rules, catalog entries and signing keys made in memory.
 * Nothing here starts a server or opens a database; keys are generated per test file, as src/oidc/keys.ts
 * shapes them.
 */
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import type { McpServerRecord, ResourceServerFacts } from '../../src/db/catalog.ts';
import type { KeyPurpose } from '../../src/db/schema.ts';
import type { User } from '../../src/db/users.ts';
import type { CheckDef, CheckList } from '../../src/exchange/checks.ts';
import { ID_JAG, ID_TOKEN, TOKEN_EXCHANGE, type ExchangeInput, type Params, type RequestingClient } from '../../src/exchange/request.ts';
import { KEY_ALGS, type SigningKey } from '../../src/oidc/keys.ts';
import type { Rule } from '../../src/policy/index.ts';

export const NOW = 1_700_000_000;
export const ISSUER = 'https://idp.example';
export const CLIENT_ID = 'agent';
export const RS_ISSUER = 'https://auth.todo.example';
export const RS_ALIAS = 'https://todo.example';
export const MCP = 'https://mcp.todo.example/mcp';
export const MCP_ADMIN = 'https://mcp.todo.example/admin';

export function client(over: Partial<RequestingClient> = {}): RequestingClient {
  return { id: CLIENT_ID, authMethod: 'client_secret_basic', grantTypes: ['authorization_code', TOKEN_EXCHANGE], enabled: true, ...over };
}

/** A valid ID-JAG request's parameters; `over` replaces them, or removes one with undefined. */
export function params(over: Record<string, string | string[] | undefined> = {}): Params {
  const all: Record<string, string | string[] | undefined> = {
    requested_token_type: ID_JAG,
    subject_token: 'the-subject-token',
    subject_token_type: ID_TOKEN,
    audience: RS_ISSUER,
    resource: MCP,
    scope: 'todos.read',
    ...over,
  };
  return Object.fromEntries(Object.entries(all).filter(([, v]) => v !== undefined));
}

export function input(over: Record<string, string | string[] | undefined> = {}, who: Partial<RequestingClient> = {}): ExchangeInput {
  return { client: client(who), params: params(over), credentialsInBody: false };
}

export function user(over: Partial<User> = {}): User {
  return { sub: 'sub-alice', username: 'alice', email: 'alice@example.com', email_verified: 1, name: 'Alice', disabled: 0, ...over };
}

/** The Todo AS, releasing email as the seed's Resource ASes do. */
export function resourceServer(over: Partial<ResourceServerFacts> = {}): ResourceServerFacts {
  return { id: 'rs-todo', issuer: RS_ISSUER, name: 'Todo AS', enabled: true, release: { claims: ['email'], audTenant: null, subIdFormat: null }, ...over };
}

export function mcpServer(over: Partial<McpServerRecord> = {}): McpServerRecord {
  return { id: 'mcp-todo', resource: MCP, resourceServerId: 'rs-todo', enabled: true, scopes: ['todos.read', 'todos.write'], ...over };
}

/** An enabled rule of CLIENT_ID for the whole Todo AS and everyone: todos.read and todos.write, read by default, 300 s. */
export function rule(id: string, over: Partial<Omit<Rule, 'id'>> = {}): Rule {
  return {
    id, clientId: CLIENT_ID, resourceServerId: 'rs-todo', mcpServerId: null, subjects: { kind: 'everyone' },
    scopes: ['todos.read', 'todos.write'], defaultScopes: ['todos.read'], rsClientId: null, lifetime: 300, maxAuthAge: null, enabled: true, notBefore: null, expiresAt: null,
    ...over,
  };
}

/** A signing key as src/oidc/keys.ts makes and loads one: kid = the public JWK's thumbprint, alg and use on both JWKs. */
export async function signingKey(purpose: KeyPurpose): Promise<SigningKey & { privateKey: CryptoKey; publicKey: CryptoKey }> {
  const alg = KEY_ALGS[purpose];
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'RS256' ? { modulusLength: 2048 } : {}) });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  const meta = { kid, alg, use: 'sig' };
  return {
    kid, alg, purpose, active: true,
    privateJwk: { ...(await exportJWK(privateKey)), ...meta }, publicJwk: { ...publicJwk, ...meta },
    privateKey, publicKey,
  };
}

/** Each check's status, by name, in planned order. */
export function statuses(checks: CheckList): Record<string, string> {
  return Object.fromEntries(checks.results.map((c) => [c.name, c.status]));
}

/**
 * Asserts that `failed` is the only failed check of `defs`, that every check of `defs` before it passed,
 * and that every one after it was not reached.
 */
export function expectStoppedAt(checks: CheckList, defs: readonly CheckDef[], failed: string): void {
  const at = defs.findIndex((d) => d.name === failed);
  expect(at).toBeGreaterThanOrEqual(0);
  const expected = Object.fromEntries(defs.map((d, i) => [d.name, i < at ? 'passed' : i === at ? 'failed' : 'not_reached']));
  const actual = Object.fromEntries(defs.map((d) => [d.name, statuses(checks)[d.name]]));
  expect(actual).toEqual(expected);
}

/** What `run` throws (failing the test when it throws nothing). */
export function thrownBy(run: () => unknown): unknown {
  try {
    run();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw, got none');
}
