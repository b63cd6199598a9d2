import { z } from 'zod';
import { findClientRow, type ClientRow } from '../db/clients.ts';
import { now as nowSeconds, type DB } from '../db/index.ts';
import { findUserByName } from '../db/users.ts';
import type { AuditDecision } from '../db/schema.ts';
import { runExchange, type ExchangeResult } from '../exchange/pipeline.ts';
import type { CheckResult } from '../exchange/checks.ts';
import type { Warning } from '../exchange/lint.ts';
import { previewMinter, type IdJagClaims } from '../exchange/mint.ts';
import { databasePorts } from '../exchange/ports.ts';
import { assumedProof } from '../exchange/proof.ts';
import { ID_JAG, ID_TOKEN, TOKEN_EXCHANGE, type ExchangeInput, type RequestingClient } from '../exchange/request.ts';
import { assumedSubject } from '../exchange/subject.ts';
import type { AuditCheck } from './audit-query.ts';
import { invalid } from './errors.ts';
import { Scope } from './fields.ts';

/**
 * "What if": the token endpoint's decision for this client, user, audience, resources and scopes, made by the
 * very pipeline the token endpoint runs (src/exchange/pipeline.ts), with two ports swapped: the subject is
 * assumed (a valid ID Token of this user, issued to this client, from a login `auth_age` seconds ago) and
 * the minter only previews. Nothing is signed and nothing is written: no audit row, no change. The claims
 * are the ones the token endpoint would sign (the issuer, the tenant and the Resource AS's release included),
 * without `jti`, `iat` and `exp`, which only signing sets.
 */

const OneOrMany = z.union([z.string().min(1).max(2048), z.array(z.string().min(1).max(2048)).max(20)]);

export const SimulationInput = z.strictObject({
  client_id: z.string().min(1).max(255),
  /** a username or a sub */
  user: z.string().min(1).max(255),
  /** the Resource AS issuer or one of its aliases, as a client would send it */
  audience: z.string().min(1).max(2048),
  /** MCP server resource identifiers; omitted: an audience-only request */
  resource: OneOrMany.optional(),
  /** space-separated, or a list; omitted: the rule's default scopes */
  scope: z.union([z.string().max(2000), z.array(Scope).max(100)]).optional(),
  /** seconds since the user signed in, for step-up rules (default 0: a fresh login) */
  auth_age: z.number().int().min(0).max(366 * 24 * 3600).default(0),
  /** RFC 9396 authorization_details, as the client would send them: the JSON text, or the array itself */
  authorization_details: z.union([z.string().max(16_384), z.array(z.unknown()).max(100)]).optional(),
  /** a valid DPoP proof accompanies the request (RFC 9449), so the ID-JAG is bound to its key */
  dpop: z.boolean().default(false),
  /** the proof's key, by its RFC 7638 thumbprint (implies `dpop`); omitted, a placeholder names it */
  dpop_jkt: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'an RFC 7638 SHA-256 thumbprint: 43 base64url characters').optional(),
});
export type SimulationInput = z.infer<typeof SimulationInput>;

export interface SimulationResult {
  decision: Exclude<AuditDecision, 'error'>;
  /** why, in the audit log's words: `issued`, or the denial reason (no_rule, subject_not_allowed...) */
  reason: string;
  /** what the admin sees: may name rules and groups */
  explanation: string;
  /** on a denial, what the client would receive */
  error?: string;
  error_description?: string;
  max_age?: number;
  scopes: string[];
  rule_ids: string[];
  /** on an issue, the ID-JAG it would be: audience, client id at the Resource AS, lifetime, and every claim */
  id_jag?: {
    aud: string; client_id: string; sub: string; resource?: string | string[]; scope: string; expires_in: number;
    /** the DPoP key it would be bound to (RFC 9449), when a proof is assumed */
    cnf?: { jkt: string };
    /** the claims it would carry (without jti, iat, exp) */
    claims: IdJagClaims;
  };
  /** on an issue, the authorization_details granted (the same objects the token response would list) */
  authorization_details?: unknown[];
  checks: AuditCheck[];
  /** the lint warnings the client would see in its diagnostics */
  warnings: readonly Warning[];
  assumptions: string[];
}

/**
 * The checks a simulation reports: those about the client and the decision (a simulated request is
 * well-formed), and the authorization_details ones when it carries some.
 */
const REPORTED = new Set(['client_authentication', 'confidential_client', 'grant_type_allowed', 'dpop_proof', 'user', 'audience', 'resource', 'policy', 'scope', 'step_up',
  'authorization_details.format', 'authorization_details.types']);

/** What the ID-JAG preview names the key by when the simulation gives no thumbprint. */
export const ASSUMED_JKT = '(the DPoP proof key\'s thumbprint)';

const asList = (v: string | string[] | undefined): string[] => (v === undefined ? [] : [v].flat());

const auditCheck = ({ name, status, message, section, error }: CheckResult): AuditCheck =>
  ({ name, status, ...(message === undefined ? {} : { message }), section, error });

/** The client as it would authenticate at the token endpoint: its registered method and grant types, enabled or not. */
export function assumedClient(client: ClientRow): RequestingClient {
  const metadata = JSON.parse(client.metadata) as { token_endpoint_auth_method?: string; grant_types?: string[]; dpop_bound_access_tokens?: boolean };
  return {
    id: client.client_id, authMethod: metadata.token_endpoint_auth_method ?? 'client_secret_basic', grantTypes: metadata.grant_types ?? [], enabled: !client.disabled,
    dpopBound: metadata.dpop_bound_access_tokens === true,
  };
}

/**
 * The token request this client would send for an ID-JAG with an (assumed) ID Token as subject: the simulator's,
 * the replay's of a recorded decision (src/admin/impact.ts), and the one effective access checks clients with.
 */
export function assumedRequest(client: RequestingClient, audience: string, resources: readonly string[], scopes: readonly string[], authorizationDetails?: string): ExchangeInput {
  return {
    client,
    params: {
      grant_type: TOKEN_EXCHANGE, requested_token_type: ID_JAG, subject_token_type: ID_TOKEN, subject_token: '(assumed)',
      audience, resource: [...new Set(resources)], ...(scopes.length ? { scope: [...new Set(scopes)].join(' ') } : {}),
      ...(authorizationDetails === undefined ? {} : { authorization_details: authorizationDetails }),
    },
    credentialsInBody: false,
  };
}

/** The token request a client would send for this simulation. */
async function simulatedInput(db: DB, input: SimulationInput): Promise<{ exchange: ExchangeInput; sub: string; username: string }> {
  const client = await findClientRow(db, input.client_id);
  if (!client) throw invalid(['client_id'], `unknown client ${input.client_id}`);
  const user = await findUserByName(db, input.user);
  if (!user) throw invalid(['user'], `unknown user ${input.user}`);
  const scope = typeof input.scope === 'string' ? input.scope.split(' ').filter(Boolean) : input.scope ?? [];
  const details = input.authorization_details === undefined ? undefined
    : typeof input.authorization_details === 'string' ? input.authorization_details : JSON.stringify(input.authorization_details);
  return { sub: user.sub, username: user.username, exchange: assumedRequest(assumedClient(client), input.audience, asList(input.resource), scope, details) };
}

/** The pipeline's result as the simulator reports it. */
function report(result: ExchangeResult, assumptions: string[]): SimulationResult {
  const checks = result.checks.results.filter((c) => REPORTED.has(c.name)).map(auditCheck);
  const { outcome } = result;
  if (outcome.kind === 'failed') throw outcome.error;
  if (outcome.kind === 'denied') {
    const r = outcome.rejection;
    return {
      decision: 'denied', reason: r.reason, explanation: r.explanation, error: r.error, error_description: r.description,
      ...(r.maxAge === undefined ? {} : { max_age: r.maxAge }),
      scopes: [], rule_ids: r.ruleIds, checks, warnings: result.record.warnings ?? [], assumptions,
    };
  }
  const { claims, decision, minted } = outcome;
  return {
    decision: 'issued', reason: 'issued', explanation: decision.explanation, scopes: decision.scopes, rule_ids: decision.ruleIds,
    id_jag: {
      aud: claims.aud, client_id: claims.client_id, sub: claims.sub,
      ...(claims.resource === undefined ? {} : { resource: claims.resource }),
      scope: decision.scopes.join(' '), expires_in: minted.exp - minted.iat,
      claims,
      ...(claims.cnf === undefined ? {} : { cnf: claims.cnf }),
    },
    ...(claims.authorization_details ? { authorization_details: claims.authorization_details } : {}),
    checks, warnings: result.record.warnings ?? [], assumptions,
  };
}

/** Who the simulated token endpoint is: the claims name the issuer and carry the tenant, as the real ones do. */
export interface SimulatedIssuer {
  issuer: string;
  tenant?: string | undefined;
}

export async function simulate(db: DB, input: SimulationInput, idp: SimulatedIssuer, at = nowSeconds()): Promise<SimulationResult> {
  const { exchange, sub, username } = await simulatedInput(db, input);
  const proof = input.dpop || input.dpop_jkt !== undefined ? input.dpop_jkt ?? ASSUMED_JKT : undefined;
  const result = await runExchange(exchange, {
    ...databasePorts(db),
    subjects: assumedSubject(sub, at - input.auth_age),
    minter: previewMinter,
    proofs: proof === undefined ? undefined : assumedProof(proof),
    issuer: idp.issuer,
    tenant: idp.tenant,
    clock: () => at,
  });
  return report(result, [
    `a valid ID Token of ${username}, issued to ${exchange.client.id}, is the subject token`,
    `the user signed in ${input.auth_age} s ago`,
    proof === undefined ? 'no DPoP proof accompanies the request' : `a valid DPoP proof by the key ${proof} accompanies the request`,
  ]);
}
