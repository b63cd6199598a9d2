import type { Context } from 'koa';
import { generateSecret } from '../../oidc/secrets.ts';
import { listChanges } from '../changes.ts';
import { invalid, parseInput } from '../errors.ts';
import { createGroup, deleteGroup, getGroup, GroupDoc, GroupPatch, listGroups, setMembers, updateGroup } from '../groups.ts';
import {
  createUser, deleteUser, getUser, listUsers, NewPassword, resetPassword, setUserDisabled, updateUser, UserCreate, UserFilter, UserPatch,
  type UserView,
} from '../users.ts';
import { audienceSubjectsOf } from '../servers.ts';
import { defined, Form, type FieldErrors } from './forms.ts';
import { actorOf, adminOf, checkboxes, done, failed, page, param, queryWithout, submit, type UiDeps, type UiRouter } from './page.ts';
import { ADMIN_GROUP } from './session.ts';

/** The directory: users (create, edit, disable, reset password) and groups (description, membership). */

const USER_FIELDS = ['username', 'name', 'email', 'email_verified', 'password', 'groups'] as const;
const GROUP_FIELDS = ['name', 'description', 'usernames'] as const;

const userPath = (u: string) => `/admin/users/${encodeURIComponent(u)}`;
const groupPath = (g: string) => `/admin/groups/${encodeURIComponent(g)}`;

/** An admin cannot shut themselves out (disable, delete, leave the admins group): another admin must do it. */
function refuseSelfLockout(ctx: Context, username: string, change: 'disable' | 'delete' | 'leave'): void {
  if (username !== adminOf(ctx).username) return;
  const what = change === 'leave' ? `remove yourself from ${ADMIN_GROUP}` : `${change} your own account`;
  throw invalid(change === 'leave' ? ['groups'] : [], `you cannot ${what} here: it would sign you out of the admin UI; ask another admin`);
}

export function directoryRoutes(r: UiRouter, deps: UiDeps): void {
  const { db } = deps;

  // Users

  const showUser = async (ctx: Context, opts: { user?: UserView; values: Record<string, string>; groups: string[]; errors?: FieldErrors; password?: { errors?: FieldErrors } }) => {
    const all = (await listGroups(db)).map((g) => g.name);
    page(ctx, deps, 'user-form', 'users', {
      title: opts.user ? `User ${opts.user.username}` : 'New user',
      user: opts.user,
      self: opts.user?.username === adminOf(ctx).username,
      values: opts.values,
      groups: checkboxes([...new Set([...all, ...opts.groups])], opts.groups),
      errors: opts.errors?.fields ?? {},
      general: opts.errors?.general ?? [],
      passwordErrors: opts.password?.errors?.fields ?? {},
      audSubs: opts.user ? await audienceSubjectsOf(db, opts.user.sub) : [],
      changes: opts.user ? (await listChanges(db, { entity: 'user', entity_id: opts.user.username, limit: 10 })).items : [],
    });
  };

  const userValues = (u: UserView) => defined({ username: u.username, name: u.name, email: u.email, email_verified: u.email_verified ? 'on' : undefined }) as Record<string, string>;

  r.get('/users', async (ctx) => {
    const q = Form.query(ctx);
    const filter = defined({ q: q.text('q'), group: q.text('group'), disabled: q.text('disabled'), after: q.text('after') });
    let result: Awaited<ReturnType<typeof listUsers>> = { items: [], next: null };
    let error: string | undefined;
    try {
      result = await listUsers(db, parseInput(UserFilter, { ...filter, limit: 50 }));
    } catch (err) {
      error = (err as Error).message;
    }
    const more = queryWithout(ctx, 'after');
    page(ctx, deps, 'users', 'users', {
      title: 'Users',
      filter: q.values(),
      groups: (await listGroups(db)).map((g) => ({ value: g.name, selected: g.name === filter.group })),
      disabled: { any: filter.disabled === undefined, yes: filter.disabled === 'true', no: filter.disabled === 'false' },
      users: result.items,
      error,
      filtered: Object.keys(filter).length > 0,
      next: result.next === null ? undefined : `/admin/users?${more ? `${more}&` : ''}after=${encodeURIComponent(result.next)}`,
    });
  });

  r.get('/users/new', (ctx) => showUser(ctx, { values: { email_verified: 'on' }, groups: [] }));

  r.post('/users', async (ctx) => {
    const f = Form.of(ctx);
    await submit(ctx, f, USER_FIELDS, async () => {
      const typed = f.raw('password');
      const input = f.parse(UserCreate, defined({
        username: f.required('username', 'enter a username'), name: f.text('name'), email: f.text('email'),
        email_verified: f.checked('email_verified'), password: typed ?? generateSecret(), groups: f.all('groups'),
      }));
      const user = await createUser(db, input, actorOf(ctx));
      if (typed === undefined) return page(ctx, deps, 'user-password', 'users', { title: 'User created', username: user.username, password: input.password, created: true });
      done(ctx, userPath(user.username), `User ${user.username} created.`);
    }, (errors, values) => showUser(ctx, { values, groups: f.all('groups'), errors }));
  });

  r.get('/users/:username', async (ctx) => {
    const user = await getUser(db, param(ctx, 'username'));
    await showUser(ctx, { user, values: userValues(user), groups: user.groups });
  });

  r.post('/users/:username', async (ctx) => {
    const user = await getUser(db, param(ctx, 'username'));
    const f = Form.of(ctx);
    await submit(ctx, f, USER_FIELDS, async () => {
      const groups = f.all('groups');
      if (user.groups.includes(ADMIN_GROUP) && !groups.includes(ADMIN_GROUP)) refuseSelfLockout(ctx, user.username, 'leave');
      const name = f.text('name');
      const email = f.text('email');
      const patch = f.parse(UserPatch, { name: name ?? null, email: email ?? null, email_verified: f.checked('email_verified'), groups });
      await updateUser(db, user.username, patch, actorOf(ctx));
      done(ctx, userPath(user.username), `User ${user.username} saved.`);
    }, (errors, values) => showUser(ctx, { user, values: { ...values, username: user.username }, groups: f.all('groups'), errors }));
  });

  r.post('/users/:username/reset-password', async (ctx) => {
    const user = await getUser(db, param(ctx, 'username'));
    const f = Form.of(ctx);
    await submit(ctx, f, ['password'], async () => {
      const typed = f.raw('password');
      const password = typed === undefined ? undefined : f.parse(NewPassword, typed);
      const result = await resetPassword(db, user.username, password, actorOf(ctx));
      if (result.password !== undefined) return page(ctx, deps, 'user-password', 'users', { title: 'Password reset', username: user.username, password: result.password });
      done(ctx, userPath(user.username), `The password of ${user.username} was changed.`);
    }, (errors) => showUser(ctx, { user, values: userValues(user), groups: user.groups, password: { errors } }), () => 'password');
  });

  for (const action of ['enable', 'disable', 'delete'] as const) {
    r.post(`/users/:username/${action}`, async (ctx) => {
      const username = param(ctx, 'username');
      try {
        if (action !== 'enable') refuseSelfLockout(ctx, username, action);
        if (action === 'delete') await deleteUser(db, username, actorOf(ctx));
        else await setUserDisabled(db, username, action === 'disable', actorOf(ctx));
      } catch (err) {
        return failed(ctx, userPath(username), err);
      }
      done(ctx, action === 'delete' ? '/admin/users' : userPath(username), `User ${username} ${action === 'delete' ? 'deleted' : `${action}d`}.`);
    });
  }

  // Groups

  const showGroups = async (ctx: Context, values: Record<string, string> = {}, errors?: FieldErrors) => page(ctx, deps, 'groups', 'groups', {
    title: 'Groups', groups: await listGroups(db), values, errors: errors?.fields ?? {}, general: errors?.general ?? [],
  });

  r.get('/groups', (ctx) => showGroups(ctx));

  r.post('/groups', async (ctx) => {
    const f = Form.of(ctx);
    await submit(ctx, f, GROUP_FIELDS, async () => {
      const group = await createGroup(db, f.parse(GroupDoc, defined({ name: f.required('name', 'enter a name'), description: f.text('description') })), actorOf(ctx));
      done(ctx, groupPath(group.name), `Group ${group.name} created.`);
    }, (errors, values) => showGroups(ctx, values, errors));
  });

  const showGroup = async (ctx: Context, name: string, values?: Record<string, string>, errors?: FieldErrors) => {
    const group = await getGroup(db, name);
    page(ctx, deps, 'group-form', 'groups', {
      title: `Group ${group.name}`,
      group,
      values: values ?? defined({ description: group.description, usernames: group.members.join('\n') }),
      errors: errors?.fields ?? {},
      general: errors?.general ?? [],
      changes: (await listChanges(db, { entity: 'group', entity_id: group.name, limit: 10 })).items,
    });
  };

  r.get('/groups/:name', (ctx) => showGroup(ctx, param(ctx, 'name')));

  r.post('/groups/:name', async (ctx) => {
    const group = await getGroup(db, param(ctx, 'name'));
    const f = Form.of(ctx);
    await submit(ctx, f, GROUP_FIELDS, async () => {
      await updateGroup(db, group.name, f.parse(GroupPatch, { description: f.text('description') ?? null }), actorOf(ctx));
      done(ctx, groupPath(group.name), `Group ${group.name} saved.`);
    }, (errors, values) => showGroup(ctx, group.name, { ...values, usernames: group.members.join('\n') }, errors));
  });

  r.post('/groups/:name/members', async (ctx) => {
    const group = await getGroup(db, param(ctx, 'name'));
    const f = Form.of(ctx);
    await submit(ctx, f, GROUP_FIELDS, async () => {
      const usernames = f.words('usernames');
      if (group.name === ADMIN_GROUP && !usernames.includes(adminOf(ctx).username)) refuseSelfLockout(ctx, adminOf(ctx).username, 'leave');
      await setMembers(db, group.name, usernames, actorOf(ctx));
      done(ctx, groupPath(group.name), `Members of ${group.name} saved.`);
    }, (errors, values) => showGroup(ctx, group.name, { description: group.description ?? '', ...values }, errors),
    (p) => (p[0] === 'usernames' || p[0] === 'groups' ? 'usernames' : undefined));
  });

  r.post('/groups/:name/delete', async (ctx) => {
    const name = param(ctx, 'name');
    try {
      if (name === ADMIN_GROUP) throw invalid(['name'], `the ${ADMIN_GROUP} group opens the admin UI: it cannot be deleted here`);
      await deleteGroup(db, name, actorOf(ctx));
    } catch (err) {
      return failed(ctx, groupPath(name), err);
    }
    done(ctx, '/admin/groups', `Group ${name} deleted.`);
  });
}
