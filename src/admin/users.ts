import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { z } from 'zod';
import { now, type DB } from '../db/index.ts';
import { generateSecret, hashSecret } from '../oidc/secrets.ts';
import { diff, recordChanges, type Actor } from './changes.ts';
import { Conflict, NotFound, invalid, parseInput } from './errors.ts';
import { containsPattern, GroupName, Name, QueryBoolean, Username } from './fields.ts';
import { isoFromSeconds, merge, present } from './format.ts';
import { rulesReferencing } from './rules.ts';
import { mappingChanges, resourceServersMapping } from './servers.ts';

/**
 * Users: the people who sign in here. Group membership belongs to the user (as in the document: a user lists
 * its groups), so every membership change is recorded as a change of the user.
 */

export const UserDoc = z.strictObject({
  username: Username,
  /** the stable subject identifier; generated when omitted */
  sub: z.string().trim().min(1).max(255).optional(),
  /** in a document only (seed or import); never exported */
  password: z.string().min(1).max(1024).optional(),
  email: z.email().optional(),
  email_verified: z.boolean().optional(),
  name: Name.optional(),
  disabled: z.boolean().optional(),
  /** replaces the user's memberships when present; groups that do not exist yet are created */
  groups: z.array(GroupName).max(1000).optional(),
});
export type UserDoc = z.infer<typeof UserDoc>;

/** Passwords an admin sets through the API or the UI (the seed format allows short demo passwords). */
export const NewPassword = z.string().min(8, 'at least 8 characters').max(1024);

export const UserCreate = UserDoc.extend({ password: NewPassword.optional() });
export type UserCreate = z.infer<typeof UserCreate>;

export const UserPatch = z.strictObject({
  email: z.email().nullable().optional(),
  email_verified: z.boolean().optional(),
  name: Name.nullable().optional(),
  disabled: z.boolean().optional(),
  groups: z.array(GroupName).max(1000).optional(),
});
export type UserPatch = z.infer<typeof UserPatch>;

export const PasswordReset = z.strictObject({
  /** omitted: a random password is generated and returned once */
  password: NewPassword.optional(),
});

export const UserFilter = z.strictObject({
  group: GroupName.optional(),
  /** part of the username, email or name */
  q: z.string().min(1).max(200).optional(),
  disabled: QueryBoolean.optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  /** the last username of the previous page */
  after: z.string().max(200).optional(),
});
export type UserFilter = z.infer<typeof UserFilter>;

/** A user as the document states it, without the password. */
export interface UserState {
  username: string;
  sub: string;
  email?: string;
  email_verified: boolean;
  name?: string;
  disabled: boolean;
  groups: string[];
}

export interface UserView extends UserState {
  has_password: boolean;
  created_at: string;
  updated_at: string;
}

type UserRow = { sub: string; username: string; email: string | null; email_verified: number; name: string | null; disabled: number; password_hash: string | null; created_at: number; updated_at: number };

async function toViews(db: DB, rows: UserRow[]): Promise<UserView[]> {
  if (rows.length === 0) return [];
  const members = await db.selectFrom('group_members').select(['user_sub', 'group_name'])
    .where('user_sub', 'in', rows.map((r) => r.sub)).orderBy('group_name').execute();
  return rows.map((r) => ({
    username: r.username,
    sub: r.sub,
    ...present({ email: r.email }),
    email_verified: Boolean(r.email_verified),
    ...present({ name: r.name }),
    disabled: Boolean(r.disabled),
    groups: members.filter((m) => m.user_sub === r.sub).map((m) => m.group_name),
    has_password: r.password_hash !== null,
    created_at: isoFromSeconds(r.created_at),
    updated_at: isoFromSeconds(r.updated_at),
  }));
}

export function userState(v: UserView): UserState {
  const { has_password: _p, created_at: _c, updated_at: _u, ...state } = v;
  return state;
}

const USER_COLUMNS = ['sub', 'username', 'email', 'email_verified', 'name', 'disabled', 'password_hash', 'created_at', 'updated_at'] as const;

export async function findUser(db: DB, username: string): Promise<UserView | undefined> {
  const row = await db.selectFrom('users').select(USER_COLUMNS).where('username', '=', username).executeTakeFirst();
  return row ? (await toViews(db, [row]))[0] : undefined;
}

export async function readUserState(db: DB, username: string): Promise<UserState | undefined> {
  const v = await findUser(db, username);
  return v && userState(v);
}

export async function getUser(db: DB, username: string): Promise<UserView> {
  const v = await findUser(db, username);
  if (!v) throw new NotFound('user', username);
  return v;
}

export async function allUsers(db: DB): Promise<UserView[]> {
  return toViews(db, await db.selectFrom('users').select(USER_COLUMNS).orderBy('username').execute());
}

export async function listUsers(db: DB, f: UserFilter): Promise<{ items: UserView[]; next: string | null }> {
  let q = db.selectFrom('users').select(USER_COLUMNS);
  if (f.group !== undefined) {
    const group = f.group;
    q = q.where('sub', 'in', (eb) => eb.selectFrom('group_members').select('user_sub').where('group_name', '=', group));
  }
  if (f.q !== undefined) {
    // case-insensitive on both dialects: SQLite's LIKE folds ASCII case, PostgreSQL's does not
    const like = containsPattern(f.q);
    q = q.where((eb) => eb.or((['username', 'email', 'name'] as const).map((c) => sql<boolean>`lower(${sql.ref(c)}) like lower(${like}) escape '\\'`)));
  }
  if (f.disabled !== undefined) q = q.where('disabled', '=', f.disabled ? 1 : 0);
  if (f.after !== undefined) q = q.where('username', '>', f.after);
  const rows = await q.orderBy('username').limit(f.limit + 1).execute();
  const page = rows.slice(0, f.limit);
  return { items: await toViews(db, page), next: rows.length > f.limit ? page.at(-1)!.username : null };
}

/**
 * Creates or updates the user the document describes, inside the caller's transaction. `passwordHash`
 * undefined keeps the stored hash (hashing is slow, so callers do it before opening the transaction).
 * Fields the document omits take their defaults, except memberships, which are kept unless `groups` is given.
 */
export async function writeUser(db: DB, u: Omit<UserDoc, 'password'>, passwordHash: string | null | undefined, at = now()): Promise<string> {
  const existing = await db.selectFrom('users').select(['sub', 'password_hash']).where('username', '=', u.username).executeTakeFirst();
  const sub = existing?.sub ?? u.sub ?? randomUUID();
  const fields = {
    email: u.email ?? null,
    email_verified: (u.email_verified ?? Boolean(u.email)) ? 1 : 0,
    name: u.name ?? null,
    disabled: u.disabled ? 1 : 0,
    password_hash: passwordHash === undefined ? existing?.password_hash ?? null : passwordHash,
    updated_at: at,
  };
  if (existing) await db.updateTable('users').set(fields).where('sub', '=', sub).execute();
  else await db.insertInto('users').values({ sub, username: u.username, created_at: at, ...fields }).execute();
  if (u.groups) {
    for (const name of u.groups) {
      await db.insertInto('groups').values({ name, description: null, created_at: at })
        .onConflict((oc) => oc.column('name').doNothing()).execute();
    }
    await db.deleteFrom('group_members').where('user_sub', '=', sub).execute();
    const groups = [...new Set(u.groups)];
    if (groups.length) await db.insertInto('group_members').values(groups.map((group_name) => ({ group_name, user_sub: sub }))).execute();
  }
  return sub;
}

/** Returns the view and, when the admin gave none, nothing else: the password is never read back. */
export async function createUser(db: DB, input: UserCreate, by: Actor): Promise<UserView> {
  const hash = input.password === undefined ? null : await hashSecret(input.password);
  return db.transaction().execute(async (trx) => {
    if (await findUser(trx, input.username)) throw invalid(['username'], `user ${input.username} already exists`);
    if (input.sub !== undefined && await trx.selectFrom('users').select('sub').where('sub', '=', input.sub).executeTakeFirst()) {
      throw invalid(['sub'], `sub ${input.sub} belongs to another user`);
    }
    const { password: _p, ...doc } = input;
    await writeUser(trx, doc, hash);
    const view = await getUser(trx, input.username);
    await recordChanges(trx, by, [{ action: 'create', entity: 'user', entity_id: input.username, before: null, after: userState(view) }]);
    return view;
  });
}

/**
 * Applies a change to the user's document form, validated whole, inside the caller's transaction; records it
 * when something changed.
 */
async function applyUserChange(trx: DB, username: string, change: (state: UserState) => Record<string, unknown>, by: Actor): Promise<UserView> {
  const before = await readUserState(trx, username);
  if (!before) throw new NotFound('user', username);
  const next = parseInput(UserDoc, change(before));
  await writeUser(trx, next, undefined);
  const view = await getUser(trx, username);
  const c = diff('user', username, before, userState(view));
  if (c) await recordChanges(trx, by, [c]);
  return view;
}

export const updateUser = (db: DB, username: string, patch: UserPatch, by: Actor) =>
  db.transaction().execute((trx) => applyUserChange(trx, username, (s) => merge(s, patch), by));

export const setUserDisabled = (db: DB, username: string, disabled: boolean, by: Actor) =>
  db.transaction().execute((trx) => applyUserChange(trx, username, (s) => ({ ...s, disabled }), by));

/**
 * Membership edits from the group side, recorded as a change of the user; inside the caller's transaction,
 * so a whole member list changes at once or not at all.
 */
export function setMembership(trx: DB, username: string, group: string, member: boolean, by: Actor): Promise<UserView> {
  return applyUserChange(trx, username, (s) => ({ ...s, groups: member ? [...new Set([...s.groups, group])] : s.groups.filter((g) => g !== group) }), by);
}

export async function resetPassword(db: DB, username: string, password: string | undefined, by: Actor): Promise<{ username: string; password?: string }> {
  const generated = password === undefined ? generateSecret() : undefined;
  const hash = await hashSecret(password ?? generated!);
  await db.transaction().execute(async (trx) => {
    const row = await trx.selectFrom('users').select(['sub', 'password_hash']).where('username', '=', username).executeTakeFirst();
    if (!row) throw new NotFound('user', username);
    await trx.updateTable('users').set({ password_hash: hash, updated_at: now() }).where('sub', '=', row.sub).execute();
    await recordChanges(trx, by, [{ action: 'reset_password', entity: 'user', entity_id: username, before: { has_password: row.password_hash !== null }, after: { has_password: true } }]);
  });
  return generated === undefined ? { username } : { username, password: generated };
}

export async function deleteUser(db: DB, username: string, by: Actor): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const before = await readUserState(trx, username);
    if (!before) throw new NotFound('user', username);
    const rules = await rulesReferencing(trx, { sub: before.sub });
    if (rules.length) throw new Conflict(`user ${username} is named by rules ${rules.join(', ')}: change those rules first, or disable the user`);
    const mapping = await resourceServersMapping(trx, before.sub);
    await trx.deleteFrom('users').where('sub', '=', before.sub).execute();
    // the user's aud_subs went with them: each Resource AS that mapped them changed too
    await recordChanges(trx, by, [{ action: 'delete', entity: 'user', entity_id: username, before, after: null }, ...await mappingChanges(trx, mapping)]);
  });
}

