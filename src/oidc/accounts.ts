import type { Account, FindAccount } from 'oidc-provider';
import type { DB, Schema } from '../db/index.ts';
import { prepared } from '../db/prepared.ts';
import type { UsersTable } from '../db/schema.ts';
import { verifyAgainstNothing, verifySecret } from './secrets.ts';

export type User = Pick<UsersTable, 'sub' | 'username' | 'email' | 'email_verified' | 'name' | 'disabled'>;

const userBySub = prepared<Schema, { sub: string }, User>((db, p) => db.selectFrom('users')
  .select(['sub', 'username', 'email', 'email_verified', 'name', 'disabled']).where('sub', '=', p('sub')));

export async function findUserBySub(db: DB, sub: string): Promise<User | undefined> {
  return (await userBySub(db, { sub }))[0];
}

const groupsBySub = prepared<Schema, { sub: string }, { group_name: string }>((db, p) => db.selectFrom('group_members')
  .select('group_name').where('user_sub', '=', p('sub')).orderBy('group_name'));

export async function groupsOf(db: DB, sub: string): Promise<string[]> {
  return (await groupsBySub(db, { sub })).map((r) => r.group_name);
}

export type Authentication =
  | { ok: true; user: User }
  | { ok: false; reason: 'unknown_user' | 'wrong_password' | 'disabled' };

/**
 * Checks a username and password. Every path costs one scrypt, so timing does not reveal which usernames
 * exist; the reason is for the log and audit only, the login page shows one message for all of them.
 */
export async function authenticate(db: DB, username: string, password: string): Promise<Authentication> {
  const row = await db.selectFrom('users')
    .select(['sub', 'username', 'email', 'email_verified', 'name', 'disabled', 'password_hash'])
    .where('username', '=', username).executeTakeFirst();
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
