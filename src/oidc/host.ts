import type { Context, Middleware, Next } from 'koa';
import mount from 'koa-mount';
import type Provider from 'oidc-provider';
import { loadKeySet, type KeySet } from './keys.ts';
import { buildProvider, type ProviderDeps } from './provider.ts';

/**
 * oidc-provider fixes its keystore at construction. To let a key rotation (from the CLI, the admin UI or
 * another node) take effect without a restart, the host rebuilds the provider when the stored key set
 * changes and swaps it in; requests already inside the old one finish there. Everything the provider
 * persists lives in the database, so nothing is lost by the swap.
 */
export class ProviderHost {
  #deps: Omit<ProviderDeps, 'keys'>;
  #provider: Provider;
  #keys: KeySet;
  #mounted: Middleware;

  private constructor(deps: Omit<ProviderDeps, 'keys'>, keys: KeySet) {
    this.#deps = deps;
    this.#keys = keys;
    this.#provider = buildProvider({ ...deps, keys });
    this.#mounted = mount(this.#provider as never);
  }

  static async create(deps: Omit<ProviderDeps, 'keys'>): Promise<ProviderHost> {
    return new ProviderHost(deps, await loadKeySet(deps.db));
  }

  get provider(): Provider {
    return this.#provider;
  }

  get keys(): KeySet {
    return this.#keys;
  }

  readonly middleware = (ctx: Context, next: Next) => this.#mounted(ctx, next);

  /** Reloads the key set; rebuilds the provider when it changed. Returns whether it did. */
  async refreshKeys(): Promise<boolean> {
    const keys = await loadKeySet(this.#deps.db);
    if (keys.fingerprint === this.#keys.fingerprint) return false;
    const provider = buildProvider({ ...this.#deps, keys });
    this.#keys = keys;
    this.#provider = provider;
    this.#mounted = mount(provider as never);
    return true;
  }
}
