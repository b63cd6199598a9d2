import { z } from 'zod';
import { now, type DB } from '../db/index.ts';
import { subsOf } from '../db/users.ts';
import { diff, recordChanges, type Actor } from './changes.ts';
import { Conflict, InvalidInput, NotFound, invalid } from './errors.ts';
import { Description, GroupName, Username } from './fields.ts';
import { present } from './format.ts';
import { rulesReferencing } from './rules.ts';
import { setMembership } from './users.ts';

/** Groups: named sets of users that rules can name. Members are edited here but belong to the users. */

export const GroupDoc = z.strictObject({
  name: GroupName,
  description: Description.optional(),
});
export type GroupDoc = z.infer<typeof GroupDoc>;

export const GroupPatch = z.strictObject({ description: Description.nullable().optional() });
export type GroupPatch = z.infer<typeof GroupPatch>;

export const MemberInput = z.strictObject({ username: Username });

export const MembersInput = z.strictObject({ usernames: z.array(Username).max(10_000) });

export interface GroupState {
  name: string;
  description?: string;
}

export interface GroupView extends GroupState {
  /** usernames, sorted */
  members: string[];
}

export async function readGroupState(db: DB, name: string): Promise<GroupState | undefined> {
  const row = await db.selectFrom('groups').select(['name', 'description']).where('name', '=', name).executeTakeFirst();
  return row && { name: row.name, ...present({ description: row.description }) };
}

async function members(db: DB, names: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>(names.map((n) => [n, []]));
  if (names.length === 0) return out;
  const rows = await db.selectFrom('group_members').innerJoin('users', 'users.sub', 'group_members.user_sub')
    .select(['group_members.group_name', 'users.username']).where('group_members.group_name', 'in', names).orderBy('users.username').execute();
  for (const r of rows) out.get(r.group_name)?.push(r.username);
  return out;
}

export async function listGroups(db: DB): Promise<GroupView[]> {
  const rows = await db.selectFrom('groups').select(['name', 'description']).orderBy('name').execute();
  const m = await members(db, rows.map((r) => r.name));
  return rows.map((r) => ({ name: r.name, ...present({ description: r.description }), members: m.get(r.name) ?? [] }));
}

export async function getGroup(db: DB, name: string): Promise<GroupView> {
  const state = await readGroupState(db, name);
  if (!state) throw new NotFound('group', name);
  return { ...state, members: (await members(db, [name])).get(name) ?? [] };
}

/** Creates or updates the group, inside the caller's transaction. */
export async function writeGroup(db: DB, g: GroupDoc, at = now()): Promise<void> {
  await db.insertInto('groups').values({ name: g.name, description: g.description ?? null, created_at: at })
    .onConflict((oc) => oc.column('name').doUpdateSet({ description: g.description ?? null })).execute();
}

export async function createGroup(db: DB, input: GroupDoc, by: Actor): Promise<GroupView> {
  return db.transaction().execute(async (trx) => {
    if (await readGroupState(trx, input.name)) throw invalid(['name'], `group ${input.name} already exists`);
    await writeGroup(trx, input);
    const after = await readGroupState(trx, input.name);
    await recordChanges(trx, by, [{ action: 'create', entity: 'group', entity_id: input.name, before: null, after }]);
    return getGroup(trx, input.name);
  });
}

export async function updateGroup(db: DB, name: string, patch: GroupPatch, by: Actor): Promise<GroupView> {
  return db.transaction().execute(async (trx) => {
    const before = await readGroupState(trx, name);
    if (!before) throw new NotFound('group', name);
    const description = patch.description === undefined ? before.description : patch.description ?? undefined;
    await writeGroup(trx, { name, ...(description === undefined ? {} : { description }) });
    const change = diff('group', name, before, await readGroupState(trx, name));
    if (change) await recordChanges(trx, by, [change]);
    return getGroup(trx, name);
  });
}

export async function deleteGroup(db: DB, name: string, by: Actor): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const before = await readGroupState(trx, name);
    if (!before) throw new NotFound('group', name);
    const rules = await rulesReferencing(trx, { group: name });
    if (rules.length) throw new Conflict(`group ${name} is named by rules ${rules.join(', ')}: change those rules first`);
    const former = (await members(trx, [name])).get(name) ?? [];
    await trx.deleteFrom('groups').where('name', '=', name).execute();
    await recordChanges(trx, by, [{ action: 'delete', entity: 'group', entity_id: name, before: { ...before, members: former }, after: null }]);
  });
}

export async function addMember(db: DB, group: string, username: string, by: Actor): Promise<GroupView> {
  return db.transaction().execute(async (trx) => {
    await getGroup(trx, group);
    await setMembership(trx, username, group, true, by);
    return getGroup(trx, group);
  });
}

export async function removeMember(db: DB, group: string, username: string, by: Actor): Promise<GroupView> {
  return db.transaction().execute(async (trx) => {
    const { members: current } = await getGroup(trx, group);
    if (!current.includes(username)) throw new NotFound(`member of group ${group}`, username);
    await setMembership(trx, username, group, false, by);
    return getGroup(trx, group);
  });
}

/** Makes `usernames` the exact member list: one recorded user change per user that joined or left. */
export async function setMembers(db: DB, group: string, usernames: string[], by: Actor): Promise<GroupView> {
  return db.transaction().execute(async (trx) => {
    const { members: current } = await getGroup(trx, group);
    const wanted = [...new Set(usernames)];
    const known = new Set((await subsOf(trx, wanted)).map((u) => u.username));
    const issues = usernames.flatMap((u, i) => (known.has(u) ? [] : [{ path: ['usernames', i], message: `unknown user ${u}` }]));
    if (issues.length) throw new InvalidInput(issues);
    for (const u of wanted.filter((x) => !current.includes(x))) await setMembership(trx, u, group, true, by);
    for (const u of current.filter((x) => !wanted.includes(x))) await setMembership(trx, u, group, false, by);
    return getGroup(trx, group);
  });
}
