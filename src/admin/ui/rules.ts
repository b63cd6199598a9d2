import type { Context } from 'koa';
import { listChanges } from '../changes.ts';
import { parseInput, type Issue } from '../errors.ts';
import { listResourceServers } from '../servers.ts';
import { createRule, deleteRule, getRule, listRules, RuleDoc, RuleFilter, setRuleEnabled, updateRule, type RulePatch, type RuleView } from '../rules.ts';
import { defined, Form, type FieldErrors } from './forms.ts';
import { catalog, select } from './options.ts';
import { actorOf, done, failed, page, param, queryWithout, submit, type UiDeps, type UiRouter } from './page.ts';
import { safeNext } from './session.ts';

const FIELDS = ['id', 'description', 'client_id', 'audience', 'resource', 'who', 'who_groups', 'who_users', 'scopes', 'default_scopes',
  'rs_client_id', 'lifetime', 'max_auth_age', 'authorization_details_types', 'enabled'] as const;

/** `who.groups.1` is shown at the groups box, `who` (a duplicate rule) at the who choice. */
function ruleField(path: Issue['path']): string | undefined {
  if (path[0] === 'who' && (path[1] === 'groups' || path[1] === 'users')) return `who_${path[1]}`;
  return path.length ? String(path[0]) : undefined;
}

/** The rule form as the document states a rule. */
function ruleFromForm(f: Form): RuleDoc {
  const kind = f.text('who') ?? 'everyone';
  const list = (key: 'groups' | 'users') => {
    const items = f.words(`who_${key}`);
    if (items.length === 0) f.issues.push({ path: ['who', key], message: `name at least one ${key.slice(0, -1)}, or choose another option` });
    return items;
  };
  const who = kind === 'groups' ? { groups: list('groups') } : kind === 'users' ? { users: list('users') } : kind;
  return f.parse(RuleDoc, defined({
    id: f.text('id'),
    description: f.text('description'),
    client_id: f.required('client_id', 'choose the client'),
    audience: f.required('audience', 'choose the Resource AS'),
    resource: f.text('resource'),
    who,
    scopes: f.words('scopes'),
    default_scopes: f.words('default_scopes'),
    rs_client_id: f.text('rs_client_id'),
    lifetime: f.int('lifetime'),
    max_auth_age: f.int('max_auth_age'),
    authorization_details_types: f.lines('authorization_details_types'),
    enabled: f.checked('enabled'),
  }));
}

/** An edit replaces the rule with what the form says: an emptied optional field is cleared. */
function patchFromDoc(doc: RuleDoc): RulePatch {
  return {
    description: doc.description ?? null,
    client_id: doc.client_id,
    audience: doc.audience,
    resource: doc.resource ?? null,
    who: doc.who,
    scopes: doc.scopes,
    default_scopes: doc.default_scopes,
    rs_client_id: doc.rs_client_id ?? null,
    lifetime: doc.lifetime,
    max_auth_age: doc.max_auth_age ?? null,
    authorization_details_types: doc.authorization_details_types?.length ? doc.authorization_details_types : null,
    enabled: doc.enabled ?? true,
  };
}

function formValues(rule: RuleView): Record<string, string> {
  const who = rule.who === 'everyone' ? 'everyone' : 'groups' in rule.who ? 'groups' : 'users';
  return defined({
    id: rule.id,
    description: rule.description,
    client_id: rule.client_id,
    audience: rule.audience,
    resource: rule.resource,
    who,
    who_groups: rule.who !== 'everyone' && 'groups' in rule.who ? rule.who.groups.join(' ') : undefined,
    who_users: rule.who !== 'everyone' && 'users' in rule.who ? rule.who.users.join(' ') : undefined,
    scopes: rule.scopes.join(' '),
    default_scopes: rule.default_scopes.join(' '),
    rs_client_id: rule.rs_client_id,
    lifetime: String(rule.lifetime),
    max_auth_age: rule.max_auth_age === undefined ? undefined : String(rule.max_auth_age),
    authorization_details_types: rule.authorization_details_types?.join('\n'),
    enabled: rule.enabled ? 'on' : undefined,
  }) as Record<string, string>;
}

export const whoText = (who: RuleView['who']) => (who === 'everyone' ? 'everyone' : 'groups' in who ? `groups: ${who.groups.join(', ')}` : `users: ${who.users.join(', ')}`);

export function ruleRoutes(r: UiRouter, deps: UiDeps): void {
  const { db } = deps;

  const showForm = async (ctx: Context, opts: { rule?: RuleView; values: Record<string, string>; errors?: FieldErrors }) => {
    const c = await catalog(db);
    const v = opts.values;
    page(ctx, deps, 'rule-form', 'rules', {
      title: opts.rule ? `Rule ${opts.rule.id}` : 'New rule',
      rule: opts.rule,
      values: v,
      errors: opts.errors?.fields ?? {},
      general: opts.errors?.general ?? [],
      clients: c.clients,
      audiences: select(c.audiences, v.audience),
      resources: select(c.resources, v.resource),
      groups: c.groups,
      who: { everyone: (v.who ?? 'everyone') === 'everyone', groups: v.who === 'groups', users: v.who === 'users' },
      changes: opts.rule ? (await listChanges(db, { entity: 'rule', entity_id: opts.rule.id, limit: 10 })).items : [],
    });
  };

  r.get('/rules', async (ctx) => {
    const q = Form.query(ctx);
    const c = await catalog(db);
    const filter = defined({ client_id: q.text('client_id'), resource: q.text('resource'), group: q.text('group'), enabled: q.text('enabled'), after: q.text('after') });
    let result: Awaited<ReturnType<typeof listRules>> = { items: [], next: null };
    let error: string | undefined;
    try {
      result = await listRules(db, parseInput(RuleFilter, { ...filter, limit: 50 }));
    } catch (err) {
      error = (err as Error).message;
    }
    const names = new Map((await listResourceServers(db)).flatMap((s) => s.mcp_servers.map((m) => [m.resource, m.name] as const)));
    const more = queryWithout(ctx, 'after');
    page(ctx, deps, 'rules', 'rules', {
      title: 'Policy rules',
      filter: q.values(),
      clients: select(c.clients, filter.client_id),
      resources: select(c.resources, filter.resource),
      groups: select(c.groups.map((g) => ({ value: g, label: g })), filter.group),
      enabled: { any: filter.enabled === undefined, on: filter.enabled === 'true', off: filter.enabled === 'false' },
      error,
      here: ctx.url,
      rules: result.items.map((rule) => ({
        ...rule,
        who_text: whoText(rule.who),
        target: rule.resource ? names.get(rule.resource) ?? rule.resource : undefined,
        defaults_all: rule.default_scopes.length === rule.scopes.length && rule.scopes.every((s) => rule.default_scopes.includes(s)),
      })),
      next: result.next === null ? undefined : `/admin/rules?${more ? `${more}&` : ''}after=${encodeURIComponent(result.next)}`,
      filtered: Object.keys(filter).length > 0,
    });
  });

  r.get('/rules/new', async (ctx) => {
    const q = Form.query(ctx);
    await showForm(ctx, { values: { lifetime: '300', enabled: 'on', who: 'groups', ...q.values() } });
  });

  r.post('/rules', async (ctx) => {
    const form = Form.of(ctx);
    await submit(ctx, form, FIELDS, async () => {
      const rule = await createRule(db, ruleFromForm(form), actorOf(ctx));
      done(ctx, `/admin/rules/${encodeURIComponent(rule.id)}/edit`, `Rule ${rule.id} created.`);
    }, (errors, values) => showForm(ctx, { values, errors }), ruleField);
  });

  r.get('/rules/:id/edit', async (ctx) => {
    const rule = await getRule(db, param(ctx, 'id'));
    await showForm(ctx, { rule, values: formValues(rule) });
  });

  r.post('/rules/:id/edit', async (ctx) => {
    const rule = await getRule(db, param(ctx, 'id'));
    const form = Form.of(ctx);
    await submit(ctx, form, FIELDS, async () => {
      const { id: _id, ...doc } = ruleFromForm(form);
      await updateRule(db, rule.id, patchFromDoc(doc), actorOf(ctx));
      done(ctx, `/admin/rules/${encodeURIComponent(rule.id)}/edit`, `Rule ${rule.id} saved.`);
    }, (errors, values) => showForm(ctx, { rule, values: { ...values, id: rule.id }, errors }), ruleField);
  });

  for (const action of ['enable', 'disable', 'delete'] as const) {
    r.post(`/rules/:id/${action}`, async (ctx) => {
      const id = param(ctx, 'id');
      const back = safeNext(Form.of(ctx).text('back'), '/admin/rules');
      try {
        if (action === 'delete') await deleteRule(db, id, actorOf(ctx));
        else await setRuleEnabled(db, id, action === 'enable', actorOf(ctx));
      } catch (err) {
        return failed(ctx, back, err);
      }
      done(ctx, action === 'delete' && back.startsWith(`/admin/rules/${encodeURIComponent(id)}`) ? '/admin/rules' : back,
        `Rule ${id} ${action === 'delete' ? 'deleted' : `${action}d`}.`);
    });
  }
}
