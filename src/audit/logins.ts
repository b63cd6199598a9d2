import type { DB } from '../db/index.ts';
import type { LoginEvent, LoginEventsTable } from '../db/schema.ts';
import { text, uuidv7 } from './index.ts';

/**
 * The sign-in audit trail (table `login_events`): every success, failure and throttled attempt at the login
 * form, apart from audit_log (token-exchange decisions only). Never a password; the username is the account
 * name as the throttle keys it, so every attempt at one account is found under one name.
 */
export interface LoginRecord {
  requestId: string;
  event: LoginEvent;
  /** failed: unknown_user | wrong_password | disabled; throttled: account | ip */
  reason?: string | undefined;
  username: string;
  sub?: string | undefined;
  clientId?: string | undefined;
  ip?: string | undefined;
  userAgent?: string | undefined;
  failures?: number | undefined;
  retryAfter?: number | undefined;
}

export async function recordLogin(db: DB, r: LoginRecord, at = Date.now()): Promise<string> {
  const id = uuidv7(at);
  const row: LoginEventsTable = {
    id,
    at,
    request_id: r.requestId,
    event: r.event,
    reason: r.reason ?? null,
    username: r.username.slice(0, 255),
    sub: text(r.sub, 255),
    client_id: text(r.clientId, 255),
    ip: text(r.ip, 64),
    user_agent: text(r.userAgent, 512),
    failures: r.failures ?? null,
    retry_after: r.retryAfter ?? null,
  };
  await db.insertInto('login_events').values(row).execute();
  return id;
}
