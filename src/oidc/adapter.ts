import Provider, { errors, type Adapter, type AdapterPayload, type KoaContextWithOIDC } from 'oidc-provider';
import { now, type DB, type Schema } from '../db/index.ts';
import { readClientAhead, readsAhead } from '../exchange/read-ahead.ts';
import { prepared } from '../db/prepared.ts';
import { findEnabledClient } from '../db/clients.ts';
import type { OidcPayloadsTable } from '../db/schema.ts';

/**
 * oidc-provider's storage for every model it persists (sessions, interactions, grants, codes, tokens, replay
 * detection), in one table keyed by (model, id). Clients are the exception: they are read from the
 * `clients` table the admin keeps, and the provider never writes them.
 */
export function adapterFactory(db: DB) {
  return (model: string): Adapter => (model === 'Client' ? new ClientAdapter(db) : new PayloadAdapter(db, model));
}

// Both run on every token request (the client, the token or code presented): prepared once.
const payloadById = prepared<Schema, { model: string; id: string }, Pick<OidcPayloadsTable, 'payload' | 'expires_at' | 'consumed_at'>>((db, p) =>
  db.selectFrom('oidc_payloads').select(['payload', 'expires_at', 'consumed_at']).where('model', '=', p('model')).where('id', '=', p('id')));

class PayloadAdapter implements Adapter {
  readonly #db: DB;
  readonly #model: string;

  constructor(db: DB, model: string) {
    this.#db = db;
    this.#model = model;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
    const row = {
      payload: JSON.stringify(payload),
      grant_id: payload.grantId ?? null,
      user_code: payload.userCode ?? null,
      uid: payload.uid ?? null,
      expires_at: expiresIn ? now() + expiresIn : null,
    };
    await this.#db.insertInto('oidc_payloads').values({ model: this.#model, id, consumed_at: null, ...row })
      .onConflict((oc) => oc.columns(['model', 'id']).doUpdateSet(row)).execute();
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    return this.#findBy('id', id);
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.#findBy('uid', uid);
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.#findBy('user_code', userCode);
  }

  async #findBy(column: 'id' | 'uid' | 'user_code', value: string): Promise<AdapterPayload | undefined> {
    const row = column === 'id'
      ? (await payloadById(this.#db, { model: this.#model, id: value }))[0]
      : await this.#db.selectFrom('oidc_payloads').select(['payload', 'expires_at', 'consumed_at'])
        .where('model', '=', this.#model).where(column, '=', value).executeTakeFirst();
    if (!row || (row.expires_at !== null && row.expires_at <= now())) return undefined;
    const payload = JSON.parse(row.payload) as AdapterPayload;
    return row.consumed_at === null ? payload : { ...payload, consumed: row.consumed_at };
  }

  /**
   * Marks a code or token used, atomically: of two requests (or two nodes) racing to redeem the same one,
   * exactly one updates the row; the other is refused before anything is issued.
   */
  async consume(id: string): Promise<void> {
    const res = await this.#db.updateTable('oidc_payloads').set({ consumed_at: now() })
      .where('model', '=', this.#model).where('id', '=', id).where('consumed_at', 'is', null).executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) throw new errors.InvalidGrant(`${this.#model} already consumed or not found`);
  }

  async destroy(id: string): Promise<void> {
    await this.#db.deleteFrom('oidc_payloads').where('model', '=', this.#model).where('id', '=', id).execute();
  }

  /**
   * The provider calls this once per model it revokes (access tokens, refresh tokens, codes): delete that
   * model's rows only. A pending Interaction carries the grant id too, and a sign-in that replaces the
   * session's account revokes the old grant while that very interaction is still being completed.
   */
  async revokeByGrantId(grantId: string): Promise<void> {
    await this.#db.deleteFrom('oidc_payloads').where('model', '=', this.#model).where('grant_id', '=', grantId).execute();
  }
}

class ClientAdapter implements Adapter {
  readonly #db: DB;

  constructor(db: DB) {
    this.#db = db;
  }

  /** The stored secret hash stands in for `client_secret`; the provider compares through compareClientSecret. */
  async find(id: string): Promise<AdapterPayload | undefined> {
    // for a token exchange, the change counters its lookup cache is checked against come along (src/exchange/read-ahead.ts)
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    const row = readsAhead(ctx) ? await readClientAhead(this.#db, ctx, id) : await findEnabledClient(this.#db, id);
    if (!row) return undefined;
    return { ...JSON.parse(row.metadata), client_id: id, ...(row.secret_hash ? { client_secret: row.secret_hash } : {}) };
  }

  async upsert(): Promise<void> {
    throw new Error('clients are kept in the clients table by the admin, not by the provider');
  }

  async destroy(): Promise<void> {
    throw new Error('clients are kept in the clients table by the admin, not by the provider');
  }

  async consume(): Promise<void> {}
  async findByUid(): Promise<undefined> { return undefined; }
  async findByUserCode(): Promise<undefined> { return undefined; }
  async revokeByGrantId(): Promise<void> {}
}

/** Expired rows are useless to the provider (find ignores them); delete them so the table stays small. */
export async function deleteExpiredPayloads(db: DB, at = now()): Promise<number> {
  const res = await db.deleteFrom('oidc_payloads').where('expires_at', '<=', at).executeTakeFirst();
  return Number(res.numDeletedRows);
}
