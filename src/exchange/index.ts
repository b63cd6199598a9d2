import type Provider from 'oidc-provider';
import { dupes, grantType, parameters, tokenExchangeHandler, type ExchangeDeps } from './grant.ts';
import { ID_JAG, TOKEN_EXCHANGE } from './request.ts';

/**
 * The token exchange for ID-JAGs (RFC 8693, draft-ietf-oauth-identity-assertion-authz-grant): one pipeline
 * (pipeline.ts) behind three adapters: the provider's grant (grant.ts), the recorder of refusals before the
 * grant (refusals.ts), and the admin's simulator (src/admin/simulate.ts).
 */

export { ID_JAG, TOKEN_EXCHANGE } from './request.ts';
export { exchangeRefusals } from './refusals.ts';
export { dpopNonces } from './proof.ts';
export { EXCHANGE_STAGES, runExchange, type ExchangeStage } from './pipeline.ts';
export { OBSERVED_STAGES, type ExchangeObserver, type ObservedDecision, type ObservedStage } from './observe.ts';
export type { ExchangeDeps } from './grant.ts';

/** RFC 8693 token exchange for ID-JAGs, as a grant of the provider. */
export function registerTokenExchange(provider: Provider, deps: ExchangeDeps): void {
  provider.registerGrantType(grantType, tokenExchangeHandler(deps), parameters, dupes);
  // The provider refuses a client whose grant_types lack the grant with invalid_request, before the handler
  // runs. RFC 6749 §5.2 calls that unauthorized_client (and it deserves an audit row), so every client reaches
  // the handler, whose grant_type_allowed check decides.
  const allowed = provider.Client.prototype.grantTypeAllowed;
  provider.Client.prototype.grantTypeAllowed = function grantTypeAllowed(this: InstanceType<Provider['Client']>, type: string) {
    return type === TOKEN_EXCHANGE || allowed.call(this, type);
  };
}

/** Discovery additions (draft §7). */
export const discoveryMetadata = {
  identity_chaining_requested_token_types_supported: [ID_JAG],
};
