import type { Context } from 'koa';
import { listChanges, type ChangeView } from '../changes.ts';
import { invalid, parseInput, type Issue } from '../errors.ts';
import { DEFAULT_IMPACT, type ImpactSummary } from '../impact.ts';
import { previewRuleChange, saveRuleChange } from '../rule-changes.ts';
import { listResourceServers } from '../servers.ts';
import { getRule, listRules, RuleDoc, RuleFilter, type RulePatch, type RuleView, type Validity } from '../rules.ts';
import { defined, Form, timeInput, type FieldErrors } from './forms.ts';
import { impactLine, impactView } from './impact.ts';
import { catalog, select } from './options.ts';
import { actorOf, done, failed, page, param, queryWithout, submit, type UiDeps, type UiRouter } from './page.ts';
import { safeNext } from './session.ts';

const FIELDS = ['id', 'description', 'client_id', 'audience', 'resource', 'who', 'who_groups', 'who_users', 'scopes', 'default_scopes',
  'rs_client_id', 'lifetime', 'max_auth_age', 'authorization_details_types', 'enabled', 'not_before', 'expires_at'] as const;

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
    not_before: timeInput(f.text('not_before')),
    expires_at: timeInput(f.text('expires_at')),
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
    not_before: doc.not_before ?? null,
    expires_at: doc.expires_at ?? null,
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
    not_before: localTime(rule.not_before),
    expires_at: localTime(rule.expires_at),
  }) as Record<string, string>;
}

/** An instant as a `datetime-local` field holds it: UTC, to the second, without the zone (the page says UTC). */
const localTime = (iso: string | undefined) => iso?.replace(/(\.\d+)?Z$/, '');

export const whoText = (who: RuleView['who']) => (who === 'everyone' ? 'everyone' : 'groups' in who ? `groups: ${who.groups.join(', ')}` : `users: ${who.users.join(', ')}`);

const VALIDITY_TEXT: Record<Validity, string> = { in_force: 'in force', expired: 'expired', not_yet_valid: 'not yet valid' };

/** What the rules list says of a rule's window: expired, not yet valid, or in force until a date. */
function windowOf(rule: RuleView) {
  return {
    validity: rule.validity,
    validity_text: VALIDITY_TEXT[rule.validity],
    window_note: rule.validity === 'expired' ? `since ${rule.expires_at}` : rule.validity === 'not_yet_valid' ? `from ${rule.not_before}`
      : rule.expires_at ? `until ${rule.expires_at}` : undefined,
    timed: rule.validity !== 'in_force' || rule.expires_at !== undefined,
  };
}

const ACTIONS = ['enable', 'disable', 'delete'] as const;
type Action = (typeof ACTIONS)[number];
const PAST: Record<Action, string> = { enable: 'enabled', disable: 'disabled', delete: 'deleted' };

export function ruleRoutes(r: UiRouter, deps: UiDeps): void {
  const { db } = deps;
  const settings = deps.impact ?? DEFAULT_IMPACT;

  const showForm = async (ctx: Context, opts: { rule?: RuleView; values: Record<string, string>; errors?: FieldErrors; impact?: ImpactSummary }) => {
    const c = await catalog(db);
    const v = opts.values;
    page(ctx, deps, 'rule-form', 'rules', {
      title: opts.rule ? `Rule ${opts.rule.id}` : 'New rule',
      rule: opts.rule && { ...opts.rule, ...windowOf(opts.rule) },
      values: v,
      errors: opts.errors?.fields ?? {},
      general: opts.errors?.general ?? [],
      clients: c.clients,
      audiences: select(c.audiences, v.audience),
      resources: select(c.resources, v.resource),
      groups: c.groups,
      who: { everyone: (v.who ?? 'everyone') === 'everyone', groups: v.who === 'groups', users: v.who === 'users' },
      changes: opts.rule ? (await listChanges(db, { entity: 'rule', entity_id: opts.rule.id, limit: 10 })).items.map(changeView) : [],
      impact: impactView(opts.impact),
      impact_days: settings.days,
    });
  };

  r.get('/rules', async (ctx) => {
    const q = Form.query(ctx);
    const c = await catalog(db);
    const filter = defined({
      client_id: q.text('client_id'), resource: q.text('resource'), group: q.text('group'), enabled: q.text('enabled'), validity: q.text('validity'), after: q.text('after'),
    });
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
      validities: (Object.keys(VALIDITY_TEXT) as Validity[]).map((v) => ({ value: v, label: VALIDITY_TEXT[v], selected: v === filter.validity })),
      error,
      here: ctx.url,
      rules: result.items.map((rule) => ({
        ...rule,
        ...windowOf(rule),
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

  // The form's two buttons: "Preview impact" rehearses the change and shows what it would do to recorded
  // decisions (nothing saved); "Create"/"Save" saves it, with that impact in the change log.
  const previewing = (form: Form) => form.checked('preview');

  r.post('/rules', async (ctx) => {
    const form = Form.of(ctx);
    await submit(ctx, form, FIELDS, async () => {
      const change = { action: 'create', doc: ruleFromForm(form) } as const;
      if (previewing(form)) {
        const { impact } = await previewRuleChange(db, settings, change, actorOf(ctx));
        return showForm(ctx, { values: form.values(), impact });
      }
      const { rule } = await saveRuleChange(db, settings, change, actorOf(ctx));
      done(ctx, `/admin/rules/${encodeURIComponent(rule!.id)}/edit`, `Rule ${rule!.id} created.`);
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
      const change = { action: 'update', id: rule.id, patch: patchFromDoc(doc) } as const;
      if (previewing(form)) {
        const { impact } = await previewRuleChange(db, settings, change, actorOf(ctx));
        return showForm(ctx, { rule, values: { ...form.values(), id: rule.id }, impact });
      }
      await saveRuleChange(db, settings, change, actorOf(ctx));
      done(ctx, `/admin/rules/${encodeURIComponent(rule.id)}/edit`, `Rule ${rule.id} saved.`);
    }, (errors, values) => showForm(ctx, { rule, values: { ...values, id: rule.id }, errors }), ruleField);
  });

  // Before enabling, disabling or deleting: what it would do, and a button to do it.
  r.get('/rules/:id/impact', async (ctx) => {
    const rule = await getRule(db, param(ctx, 'id'));
    const action = Form.query(ctx).text('action') ?? 'disable';
    if (!(ACTIONS as readonly string[]).includes(action)) throw invalid(['action'], 'action must be enable, disable or delete');
    const { impact } = await previewRuleChange(db, settings, { action: action as Action, id: rule.id }, actorOf(ctx));
    page(ctx, deps, 'rule-impact', 'rules', {
      title: `${action[0]!.toUpperCase()}${action.slice(1)} rule ${rule.id}?`,
      rule: { ...rule, ...windowOf(rule), who_text: whoText(rule.who) },
      action,
      danger: action !== 'enable',
      back: `/admin/rules/${encodeURIComponent(rule.id)}/edit`,
      impact: impactView(impact),
    });
  });

  for (const action of ACTIONS) {
    r.post(`/rules/:id/${action}`, async (ctx) => {
      const id = param(ctx, 'id');
      const back = safeNext(Form.of(ctx).text('back'), '/admin/rules');
      try {
        await saveRuleChange(db, settings, { action, id }, actorOf(ctx));
      } catch (err) {
        return failed(ctx, back, err);
      }
      done(ctx, action === 'delete' && back.startsWith(`/admin/rules/${encodeURIComponent(id)}`) ? '/admin/rules' : back, `Rule ${id} ${PAST[action]}.`);
    });
  }
}

/** A change-log entry with its impact, if it has one, as the history tables show it. */
export const changeView = (c: ChangeView) => ({ ...c, impact_line: c.impact ? impactLine(c.impact) : undefined });
