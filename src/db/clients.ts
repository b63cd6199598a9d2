import type { DB, Schema } from './index.ts';
import { counterColumns, type Counters } from './counters.ts';
import { prepared } from './prepared.ts';
import type { ClientsTable } from './schema.ts';

/**
 * Reading OAuth clients, for every part (the provider's adapter, sign-in pages, the simulator, the client
 * diagnostics view). The admin's domain layer (src/admin/clients.ts) is the one writer.
 */

export type ClientRow = Pick<ClientsTable, 'client_id' | 'metadata' | 'secret_hash' | 'first_party' | 'disabled'>;
const CLIENT = ['client_id', 'metadata', 'secret_hash', 'first_party', 'disabled'] as const;

/** What the provider may authenticate of a client: its metadata and secret hash. */
export type EnabledClient = Pick<ClientsTable, 'metadata' | 'secret_hash'>;

// The provider reads the client on every token request: prepared once.
const enabledClientById = prepared<Schema, { id: string }, EnabledClient>((db, p) =>
  db.selectFrom('clients').select(['metadata', 'secret_hash']).where('client_id', '=', p('id')).where('disabled', '=', 0));

/** An enabled client's metadata and secret hash: what the provider may authenticate. */
export async function findEnabledClient(db: DB, clientId: string): Promise<EnabledClient | undefined> {
  return (await enabledClientById(db, { id: clientId }))[0];
}

const enabledClientCounted = prepared<Schema, { id: string }, EnabledClient & Counters>((db, p) =>
  db.selectFrom('clients').select(['metadata', 'secret_hash', ...counterColumns(db)]).where('client_id', '=', p('id')).where('disabled', '=', 0));

/**
 * The same, with the change counters (src/db/counters.ts) in the same statement: a token exchange needs both,
 * and the provider reads the client first (src/exchange/read-ahead.ts).
 */
export async function findEnabledClientCounted(db: DB, clientId: string): Promise<{ client: EnabledClient; counters: Counters } | undefined> {
  const row = (await enabledClientCounted(db, { id: clientId }))[0];
  return row && { client: { metadata: row.metadata, secret_hash: row.secret_hash }, counters: { directory: Number(row.directory), catalog: Number(row.catalog) } };
}

/** A client as stored, enabled or not. */
export async function findClientRow(db: DB, clientId: string): Promise<ClientRow | undefined> {
  return db.selectFrom('clients').select(CLIENT).where('client_id', '=', clientId).executeTakeFirst();
}
