import type { DB, Schema } from './index.ts';
import type { Kysely } from 'kysely';
import { prepared, type Param } from './prepared.ts';
import type { UsersTable } from './schema.ts';

/**
 * Reading users and their groups, for every part (the provider's accounts and sign-in, the token exchange,
 * the admin). The admin's domain layer (src/admin/users.ts, groups.ts) is the one writer.
 */

export type User = Pick<UsersTable, 'sub' | 'username' | 'email' | 'email_verified' | 'name' | 'disabled'>;
const USER = ['sub', 'username', 'email', 'email_verified', 'name', 'disabled'] as const;

// Run on every sign-in and token exchange: prepared once.
const userBySub = prepared<Schema, { sub: string }, User>((db, p) => db.selectFrom('users').select(USER).where('sub', '=', p('sub')));
const groupsBySub = prepared<Schema, { sub: string }, { group_name: string }>((db, p) => db.selectFrom('group_members')
  .select('group_name').where('user_sub', '=', p('sub')).orderBy('group_name'));

export async function findUserBySub(db: DB, sub: string): Promise<User | undefined> {
  return (await userBySub(db, { sub }))[0];
}

/** A user with the groups they belong to (a token exchange reads both). */
export interface Member {
  user: User;
  groups: string[];
}

/** The user with each of their groups, a row per group (one row, group_name null, for a user in none). */
export type MemberRow = User & { group_name: string | null };

/** The user and their groups in one statement, by `p('sub')` (also part of the exchange's single read, src/db/catalog.ts). */
export const memberQuery = (db: Kysely<Schema>, p: Param) => db.selectFrom('users')
  .leftJoin('group_members', 'group_members.user_sub', 'users.sub')
  .select([...USER.map((c) => `users.${c}` as const), 'group_members.group_name'])
  .where('users.sub', '=', p('sub'));

/** The member those rows describe, groups in the rows' order; undefined for no rows (no such user). */
export function memberOf(rows: readonly MemberRow[]): Member | undefined {
  const first = rows[0];
  if (!first) return undefined;
  const { group_name: _, ...user } = first;
  return { user, groups: rows.flatMap((r) => (r.group_name === null ? [] : [r.group_name])) };
}

/**
 * Two single-table reads: on SQLite cheaper than the join (~13 µs against ~20). On PostgreSQL the token exchange
 * reads the member within its one statement instead (src/db/catalog.ts `lookupExchange`).
 */
export async function findMemberBySub(db: DB, sub: string): Promise<Member | undefined> {
  const user = await findUserBySub(db, sub);
  return user && { user, groups: await groupsOf(db, sub) };
}

export async function groupsOf(db: DB, sub: string): Promise<string[]> {
  return (await groupsBySub(db, { sub })).map((r) => r.group_name);
}

/** For a password check: the user and their password hash. */
export async function findUserWithPassword(db: DB, username: string): Promise<(User & { password_hash: string | null }) | undefined> {
  return db.selectFrom('users').select([...USER, 'password_hash']).where('username', '=', username).executeTakeFirst();
}

/** A user named by username or by sub, as admins type them. */
export async function findUserByName(db: DB, usernameOrSub: string): Promise<User | undefined> {
  return db.selectFrom('users').select(USER)
    .where((eb) => eb.or([eb('username', '=', usernameOrSub), eb('sub', '=', usernameOrSub)])).executeTakeFirst();
}

/** The subs of these usernames (those that exist). */
export async function subsOf(db: DB, usernames: readonly string[]): Promise<{ sub: string; username: string }[]> {
  return usernames.length ? db.selectFrom('users').select(['sub', 'username']).where('username', 'in', [...usernames]).execute() : [];
}

/** The usernames of these subs (those that exist), by sub. */
export async function usernamesOf(db: DB, subs: readonly string[]): Promise<Map<string, string>> {
  if (!subs.length) return new Map();
  return new Map((await db.selectFrom('users').select(['sub', 'username']).where('sub', 'in', [...subs]).execute()).map((x) => [x.sub, x.username]));
}

/** The user, if enabled and a member of `group`. */
export async function findEnabledMember(db: DB, sub: string, group: string): Promise<Pick<User, 'sub' | 'username' | 'name'> | undefined> {
  return db.selectFrom('users').innerJoin('group_members', 'group_members.user_sub', 'users.sub')
    .select(['users.sub', 'users.username', 'users.name'])
    .where('users.sub', '=', sub).where('users.disabled', '=', 0).where('group_members.group_name', '=', group)
    .executeTakeFirst();
}
