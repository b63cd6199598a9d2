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

export interface ResourceServersTable {
  id: string;
  /** the Resource AS's RFC 8414 issuer: the ID-JAG `aud` */
  issuer: string;
  name: string;
  enabled: number;
  created_at: number;
  updated_at: number;
  /** JSON array of the identity claims its ID-JAGs carry (src/exchange/release.ts) */
  released_claims: string;
  /** the ID-JAG `aud_tenant`, when set */
  aud_tenant: string | null;
  /** the format of the ID-JAG `sub_id` (RFC 9493), when it carries one */
  sub_id_format: string | null;
}

/** The subject identifier a Resource AS knows a user by: the ID-JAG `aud_sub`. */
export interface AudienceSubjectsTable {
  resource_server_id: string;
  user_sub: string;
  aud_sub: string;
}

export interface ResourceServerAliasesTable {
  alias: string;
  resource_server_id: string;
}

export interface McpServersTable {
  id: string;
  /** RFC 9728 resource identifier */
  resource: string;
  name: string;
  resource_server_id: string;
  /** JSON array of the scopes this MCP server defines */
  scopes: string;
  enabled: number;
  created_at: number;
  updated_at: number;
}

export type SubjectKind = 'everyone' | 'groups' | 'users';

export interface PolicyRulesTable {
  id: string;
  client_id: string;
  resource_server_id: string;
  mcp_server_id: string | null;
  subject_kind: SubjectKind;
  /** JSON array: group names, or user subs; empty for everyone */
  subjects: string;
  scopes: string;
  default_scopes: string;
  rs_client_id: string | null;
  lifetime: number;
  max_auth_age: number | null;
  /** JSON array of the RFC 9396 authorization_details types the rule lets its client be granted */
  authorization_details_types: string;
  enabled: number;
  description: string | null;
  /** epoch seconds: in force from then on (inclusive); null: no lower bound */
  not_before: number | null;
  /** epoch seconds: in force until just before then (exclusive); null: no upper bound */
  expires_at: number | null;
  created_at: number;
  updated_at: number;
  created_by: string;
  updated_by: string;
}

export type AuditDecision = 'issued' | 'denied' | 'error';

export interface AuditLogTable {
  id: string;
  /** epoch milliseconds */
  at: number;
  /** empty: the row's own id (src/audit/codec.ts, encodeOwnId) */
  request_id: string;
  decision: AuditDecision;
  reason: string;
  explanation: string;
  error: string | null;
  client_id: string | null;
  sub: string | null;
  username: string | null;
  audience: string | null;
  /** JSON array */
  resources: string | null;
  scopes_requested: string | null;
  scopes_granted: string | null;
  rule_id: string | null;
  /** empty: the row's own id (src/audit/codec.ts, encodeOwnId) */
  jti: string | null;
  exp: number | null;
  subject_token_type: string | null;
  ip: string | null;
  user_agent: string | null;
  duration_ms: number | null;
  /** JSON array of the checks the decision ran */
  checks: string;
  /** JSON array of lint warnings (discouraged but accepted usage); null when none */
  warnings: string | null;
  /** JSON array of the RFC 9396 authorization_details types requested; null when none were sent */
  details_requested: string | null;
  /** JSON array of the types granted (the objects granted are in the ID-JAG); null when none */
  details_granted: string | null;
  /** the RFC 8693 actor_token_type sent, when one was */
  actor_token_type: string | null;
  /** the actor token's SHA-256, base64url: it identifies the token without storing it */
  actor_token_hash: string | null;
}

/** Strings that repeat across audit rows, stored once; the rows name them by `n` (src/audit/values.ts). */
export interface AuditValuesTable {
  n: Generated<number>;
  value: string;
}

/** ID-JAG `jti`s the demo Resource AS has accepted, kept until `exp` (epoch seconds) against replay. */
export interface DemoJtiTable {
  jti: string;
  exp: number;
}

/** The demo MCP server's todo items, one list per `owner_sub` (the access token's `sub`). */
export interface DemoTodosTable {
  id: string;
  owner_sub: string;
  text: string;
  /** the client (its id at the demo Resource AS) that added the item */
  client_id: string;
  created_at: number;
}

/** One admin change (create, update, delete...): who, what, and the entity before and after, secrets excluded. */
export interface AdminChangesTable {
  id: string;
  /** epoch milliseconds */
  at: number;
  actor: string;
  action: string;
  entity: string;
  entity_id: string;
  /** JSON snapshot; null before a create */
  before: string | null;
  /** JSON snapshot; null after a delete */
  after: string | null;
  request_id: string | null;
  /** JSON: the change's impact on recorded decisions (src/admin/impact.ts ImpactSummary); null when none was computed */
  impact: string | null;
}

/** rate-limiter-flexible's store (migration 0007): points per key until `expire` (epoch milliseconds). */
export interface RateLimitsTable {
  key: string;
  points: number;
  expire: number | null;
}

/** DPoP proofs the token exchange accepted (migration 0009), until they would be stale: its replay store. */
export interface DpopProofsTable {
  /** a hash of the proof's key thumbprint and jti */
  id: string;
  /** epoch seconds */
  expires_at: number;
}

export type LoginEvent = 'succeeded' | 'failed' | 'throttled';

/** The sign-in audit trail: every success, failure and throttled attempt at the login form. */
export interface LoginEventsTable {
  id: string;
  /** epoch milliseconds */
  at: number;
  request_id: string;
  event: LoginEvent;
  /** failed: unknown_user | wrong_password | disabled; throttled: account | ip */
  reason: string | null;
  /** trimmed and case-folded, as the throttle keys the account */
  username: string;
  sub: string | null;
  client_id: string | null;
  ip: string | null;
  user_agent: string | null;
  /** failed: the attempt's number since the account's last success */
  failures: number | null;
  /** throttled: the Retry-After given, in seconds; failed: the block this failure started */
  retry_after: number | null;
}

/**
 * One counter per part of what a token exchange reads (`directory`, `catalog`), raised by triggers with every
 * change to that part (migrations/0015_change_counters.ts): unchanged counters, unchanged data.
 */
export interface ChangeCountersTable {
  name: 'directory' | 'catalog';
  counter: number;
}

export interface Schema {
  resource_servers: ResourceServersTable;
  resource_server_aliases: ResourceServerAliasesTable;
  audience_subjects: AudienceSubjectsTable;
  mcp_servers: McpServersTable;
  policy_rules: PolicyRulesTable;
  audit_log: AuditLogTable;
  audit_values: AuditValuesTable;
  users: UsersTable;
  groups: GroupsTable;
  group_members: GroupMembersTable;
  clients: ClientsTable;
  oidc_payloads: OidcPayloadsTable;
  signing_keys: SigningKeysTable;
  settings: SettingsTable;
  demo_jti: DemoJtiTable;
  admin_changes: AdminChangesTable;
  demo_todos: DemoTodosTable;
  rate_limits: RateLimitsTable;
  login_events: LoginEventsTable;
  dpop_proofs: DpopProofsTable;
  change_counters: ChangeCountersTable;
}

export type { Generated };
