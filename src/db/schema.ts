import type { Generated } from 'kysely';

/**
 * The database schema as kysely sees it. Times are epoch seconds, booleans are 0/1 integers and structured
 * values are JSON text: the lowest common denominator of SQLite and PostgreSQL, so one set of migrations
 * and one set of queries serves both.
 */
export interface UsersTable {
  sub: string;
  username: string;
  email: string | null;
  email_verified: number;
  name: string | null;
  password_hash: string | null;
  disabled: number;
  created_at: number;
  updated_at: number;
}

export interface GroupsTable {
  name: string;
  description: string | null;
  created_at: number;
}

export interface GroupMembersTable {
  group_name: string;
  user_sub: string;
}

export interface ClientsTable {
  client_id: string;
  /** OAuth client metadata (RFC 7591 names) without any secret. */
  metadata: string;
  /** scrypt hash of the client secret; null for clients that authenticate without one. */
  secret_hash: string | null;
  first_party: number;
  disabled: number;
  created_at: number;
  updated_at: number;
}

export interface OidcPayloadsTable {
  model: string;
  id: string;
  payload: string;
  grant_id: string | null;
  user_code: string | null;
  uid: string | null;
  expires_at: number | null;
  consumed_at: number | null;
}

export type KeyPurpose = 'id_token' | 'id_jag';

export interface SigningKeysTable {
  kid: string;
  purpose: KeyPurpose;
  alg: string;
  private_jwk: string;
  public_jwk: string;
  created_at: number;
  /** set when a newer key of the same purpose took over signing */
  retired_at: number | null;
}

export interface SettingsTable {
  key: string;
  value: string;
}

export interface Schema {
  users: UsersTable;
  groups: GroupsTable;
  group_members: GroupMembersTable;
  clients: ClientsTable;
  oidc_payloads: OidcPayloadsTable;
  signing_keys: SigningKeysTable;
  settings: SettingsTable;
}

export type { Generated };
