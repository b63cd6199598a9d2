import { z } from 'zod';
import { now as nowSeconds, type DB } from '../db/index.ts';
import type { AuditDecision } from '../db/schema.ts';
import { CHECKS_BY_NAME, CheckList, DECISION_CHECKS, ExchangeRejection, type CheckDef } from '../exchange/checks.ts';
import { TOKEN_EXCHANGE } from '../exchange/request.ts';
import { loadRules, resolveTarget } from '../exchange/target.ts';
import { groupsOf } from '../oidc/accounts.ts';
import { decide, type DenyReason } from '../policy/index.ts';
import type { AuditCheck } from './audit-query.ts';
import { invalid } from './errors.ts';
import { Scope } from './fields.ts';

/**
 * "What if": the decision the token endpoint would make for this client, user, audience, resources and
 * scopes, from the same target resolution (src/exchange/target.ts) and the same policy engine
 * (src/policy decide()), reported as the same named checks. Nothing is minted and nothing is written: no
 * audit row, no change.
 *
 * What it cannot see is the subject token: it assumes a valid ID Token of this user, issued to this client,
 * from a login `auth_age` seconds ago.
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
  /** on an issue, the ID-JAG it would be: audience, client id at the Resource AS, lifetime */
  id_jag?: { aud: string; client_id: string; sub: string; resource?: string | string[]; scope: string; expires_in: number };
  checks: AuditCheck[];
  assumptions: string[];
}

const CLIENT_CHECKS = ['client_authentication', 'confidential_client', 'grant_type_allowed'].map((n) => CHECKS_BY_NAME.get(n)!);
const SIMULATED_CHECKS: CheckDef[] = [...CLIENT_CHECKS, ...DECISION_CHECKS.filter((d) => d.name !== 'issue')];

/** Which check a policy denial fails, and which ones the engine passed before it (as the token endpoint files them). */
function failingCheck(reason: DenyReason): { check: string; passed: string[] } {
  switch (reason) {
    case 'user_disabled': return { check: 'user', passed: [] };
    case 'audience_disabled': return { check: 'audience', passed: [] };
    case 'resource_disabled': return { check: 'resource', passed: [] };
    case 'scope_not_allowed':
    case 'no_scope_requested': return { check: 'scope', passed: ['policy'] };
    case 'step_up_required': return { check: 'step_up', passed: ['policy', 'scope'] };
    default: return { check: 'policy', passed: [] };
  }
}

const asList = (v: string | string[] | undefined): string[] => (v === undefined ? [] : [v].flat());

export async function simulate(db: DB, input: SimulationInput, at = nowSeconds()): Promise<SimulationResult> {
  const client = await db.selectFrom('clients').select(['client_id', 'metadata', 'disabled']).where('client_id', '=', input.client_id).executeTakeFirst();
  if (!client) throw invalid(['client_id'], `unknown client ${input.client_id}`);
  const user = await db.selectFrom('users').select(['sub', 'username', 'disabled'])
    .where((eb) => eb.or([eb('username', '=', input.user), eb('sub', '=', input.user)])).executeTakeFirst();
  if (!user) throw invalid(['user'], `unknown user ${input.user}`);

  const metadata = JSON.parse(client.metadata) as { token_endpoint_auth_method?: string; grant_types?: string[] };
  const resources = [...new Set(asList(input.resource))];
  const scopes = typeof input.scope === 'string' ? [...new Set(input.scope.split(' ').filter(Boolean))] : input.scope && [...new Set(input.scope)];
  const checks: CheckList = new CheckList(SIMULATED_CHECKS);
  const base = {
    checks: [] as AuditCheck[],
    assumptions: [
      `a valid ID Token of ${user.username}, issued to ${client.client_id}, is the subject token`,
      `the user signed in ${input.auth_age} s ago`,
    ],
  };
  const finish = (r: Omit<SimulationResult, 'checks' | 'assumptions'>): SimulationResult =>
    ({ ...r, ...base, checks: checks.results.map(({ name, status, message, section, error }) => ({ name, status, ...(message === undefined ? {} : { message }), section, error })) });

  let denyingRules: string[] = [];
  try {
    checks.require('client_authentication', !client.disabled, `client ${client.client_id} is disabled, so it cannot authenticate`, { error: 'invalid_client', reason: 'client_disabled' });
    const method = metadata.token_endpoint_auth_method ?? 'client_secret_basic';
    checks.require('confidential_client', method !== 'none',
      `client ${client.client_id} is a public client; only confidential clients may use token exchange for an ID-JAG`);
    checks.require('grant_type_allowed', metadata.grant_types?.includes(TOKEN_EXCHANGE) === true,
      `client ${client.client_id} is not registered for the grant type ${TOKEN_EXCHANGE}`);
    if (user.disabled) checks.fail('user', 'the subject token\'s user is disabled', { explanation: `user ${user.username} (${user.sub}) is disabled`, reason: 'user_disabled' });
    checks.pass('user', user.username);

    const target = await resolveTarget(db, checks, input.audience, resources);
    const rules = await loadRules(db, client.client_id, target.resourceServer.id);
    const decision = decide({
      client: { id: client.client_id, enabled: true },
      user: { sub: user.sub, enabled: true, groups: await groupsOf(db, user.sub) },
      resourceServer: target.resourceServer,
      mcpServers: target.mcpServers,
      ...(scopes?.length ? { requestedScopes: scopes } : {}),
      authTime: at - input.auth_age,
      now: at,
    }, rules);
    if (!decision.allow) {
      denyingRules = decision.ruleIds;
      const { check, passed } = failingCheck(decision.reason);
      for (const name of passed) checks.pass(name);
      checks.fail(check, decision.description, {
        explanation: decision.explanation, reason: decision.reason, error: decision.error,
        ...(decision.maxAge === undefined ? {} : { maxAge: decision.maxAge }),
      });
    }
    checks.pass('policy', decision.explanation);
    checks.pass('scope', decision.scopes.join(' '));
    checks.pass('step_up');
    return finish({
      decision: 'issued',
      reason: 'issued',
      explanation: decision.explanation,
      scopes: decision.scopes,
      rule_ids: decision.ruleIds,
      id_jag: {
        aud: target.resourceServer.issuer,
        client_id: decision.rsClientId,
        sub: user.sub,
        ...(resources.length === 1 ? { resource: resources[0]! } : resources.length > 1 ? { resource: resources } : {}),
        scope: decision.scopes.join(' '),
        expires_in: decision.lifetime,
      },
    });
  } catch (err) {
    if (!(err instanceof ExchangeRejection)) throw err;
    return finish({
      decision: 'denied',
      reason: err.reason,
      explanation: err.explanation,
      error: err.error,
      error_description: err.description,
      ...(err.maxAge === undefined ? {} : { max_age: err.maxAge }),
      scopes: [],
      rule_ids: denyingRules,
    });
  }
}
