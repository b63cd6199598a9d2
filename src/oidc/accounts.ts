import type { Account, FindAccount } from 'oidc-provider';
import type { DB } from '../db/index.ts';
import { findUserBySub, findUserWithPassword, groupsOf, type User } from '../db/users.ts';
import { verifyAgainstNothing, verifySecret } from './secrets.ts';

/** The account a sign-in attempt counts against: the username trimmed and case-folded, whether or not it exists. */
export const accountKey = (username: string): string => username.trim().normalize('NFKC').toLowerCase();

export { findUserBySub, groupsOf, type User } from '../db/users.ts';

export type Authentication =
  | { ok: true; user: User }
  | { ok: false; reason: 'unknown_user' | 'wrong_password' | 'disabled' };

/**
 * Checks a username and password. Every path costs one scrypt, so timing does not reveal which usernames
 * exist; the reason is for the log and audit only, the login page shows one message for all of them.
 */
export async function authenticate(db: DB, username: string, password: string): Promise<Authentication> {
  const row = await findUserWithPassword(db, username);
  if (!row || !row.password_hash) {
    await verifyAgainstNothing(password);
    return { ok: false, reason: 'unknown_user' };
  }
  const { password_hash: hash, ...user } = row;
  if (!(await verifySecret(password, hash))) return { ok: false, reason: 'wrong_password' };
  if (user.disabled) return { ok: false, reason: 'disabled' };
  return { ok: true, user };
}

/** oidc-provider's account lookup: a disabled or deleted user has no account, so no token names them. */
export function accountFinder(db: DB): FindAccount {
  return async (_ctx, sub): Promise<Account | undefined> => {
    const user = await findUserBySub(db, sub);
    if (!user || user.disabled) return undefined;
    return {
      accountId: user.sub,
      async claims() {
        return {
          sub: user.sub,
          preferred_username: user.username,
          ...(user.name ? { name: user.name } : {}),
          ...(user.email ? { email: user.email, email_verified: Boolean(user.email_verified) } : {}),
          groups: await groupsOf(db, user.sub),
        };
      },
    };
  };
}
