import { Readable } from 'node:stream';
import type { Context } from 'koa';
import { CHECKS_BY_NAME } from '../../exchange/checks.ts';
import { DENY_REASONS } from '../../policy/index.ts';
import { AuditExport, AuditPage, exportAudit, getAuditEntry, searchAudit, type AuditSummary } from '../audit-query.ts';
import { ChangeQuery, ENTITIES, listChanges } from '../changes.ts';
import { parseInput } from '../errors.ts';
import { defined, Form, issuesOf, timeInput, withFieldErrors } from './forms.ts';
import { catalog, select } from './options.ts';
import { page, param, queryWithout, type UiDeps, type UiRouter } from './page.ts';
import { changeView, whoText } from './rules.ts';

/** The decision log (filters, keyset pages, one decision's whole explanation, exports) and the admin change log. */

const FILTERS = ['from', 'to', 'decision', 'client_id', 'user', 'resource', 'reason'] as const;

/** The reasons a decision can carry, offered as suggestions (the filter takes any text). */
const REASONS = ['issued', ...CHECKS_BY_NAME.keys(), ...DENY_REASONS, 'client_disabled', 'user_disabled', 'audience_disabled', 'resource_disabled', 'internal_error'];

export { timeInput } from './forms.ts';

function filterFrom(q: Form) {
  return defined({
    from: timeInput(q.text('from')),
    to: timeInput(q.text('to')),
    decision: q.text('decision'),
    client_id: q.text('client_id'),
    user: q.text('user'),
    resource: q.text('resource'),
    reason: q.text('reason'),
  });
}

const simulatorLink = (e: Pick<AuditSummary, 'client_id' | 'username' | 'sub' | 'audience' | 'resources' | 'scopes_requested'>) => {
  const user = e.username ?? e.sub;
  if (!e.client_id || !user || !e.audience) return undefined;
  const q = new URLSearchParams(defined({ client_id: e.client_id, user, audience: e.audience, resource: e.resources?.[0], scope: e.scopes_requested ?? undefined }) as Record<string, string>);
  return `/admin/simulate?${q}`;
};

export function auditRoutes(r: UiRouter, deps: UiDeps): void {
  const { db } = deps;

  r.get('/audit', async (ctx) => {
    const q = Form.query(ctx);
    const filter = filterFrom(q);
    const c = await catalog(db);
    const searched = await withFieldErrors(ctx, FILTERS,
      () => searchAudit(db, parseInput(AuditPage, { ...filter, ...defined({ cursor: q.text('cursor') }), limit: 50 })));
    const { fields: errors, general } = searched;
    const result = searched.result ?? { items: [], next_cursor: null };
    const filters = queryWithout(ctx, 'cursor');
    page(ctx, deps, 'audit', 'audit', {
      title: 'Audit log',
      values: q.values(),
      errors,
      general,
      decisions: ['issued', 'denied', 'error'].map((d) => ({ value: d, selected: d === filter.decision })),
      resources: select(c.resources, filter.resource),
      clients: c.clients,
      reasons: REASONS,
      entries: result.items,
      filtered: Object.keys(filter).length > 0,
      paged: q.text('cursor') !== undefined,
      first: `/admin/audit${filters ? `?${filters}` : ''}`,
      next: result.next_cursor === null ? undefined : `/admin/audit?${filters ? `${filters}&` : ''}cursor=${encodeURIComponent(result.next_cursor)}`,
      csv: `/admin/audit/export?${new URLSearchParams({ ...filter, format: 'csv' } as Record<string, string>)}`,
      jsonl: `/admin/audit/export?${new URLSearchParams({ ...filter, format: 'jsonl' } as Record<string, string>)}`,
    });
  });

  // Streamed, page by page, like the API's export: the filtered set however large, never held in memory.
  r.get('/audit/export', async (ctx: Context) => {
    const q = Form.query(ctx);
    const { format, ...filter } = parseInput(AuditExport, { ...filterFrom(q), ...defined({ format: q.text('format') }) });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    ctx.type = format === 'csv' ? 'text/csv; charset=utf-8' : 'application/jsonl; charset=utf-8';
    ctx.set('Content-Disposition', `attachment; filename="idjag-audit-${stamp}.${format}"`);
    ctx.body = Readable.from(exportAudit(db, filter, format));
  });

  r.get('/audit/:id', async (ctx) => {
    const entry = await getAuditEntry(db, param(ctx, 'id'));
    const failedCheck = entry.checks.find((c) => c.status === 'failed');
    page(ctx, deps, 'audit-detail', 'audit', {
      title: `Decision ${entry.id}`,
      entry,
      failedCheck,
      passed: entry.checks.filter((c) => c.status === 'passed').length,
      rules: entry.rules.map((x) => ({ id: x.id, rule: x.rule && { ...x.rule, who_text: whoText(x.rule.who) } })),
      simulate: simulatorLink(entry),
    });
  });

  r.get('/changes', async (ctx) => {
    const q = Form.query(ctx);
    const filter = defined({ entity: q.text('entity'), entity_id: q.text('entity_id'), actor: q.text('actor') });
    let result: Awaited<ReturnType<typeof listChanges>> = { items: [], next_cursor: null };
    let error: string | undefined;
    try {
      result = await listChanges(db, parseInput(ChangeQuery, { ...filter, ...defined({ cursor: q.text('cursor') }), limit: 50 }));
    } catch (err) {
      if (!issuesOf(err)) throw err;
      ctx.status = 400;
      error = (err as Error).message;
    }
    const filters = queryWithout(ctx, 'cursor');
    page(ctx, deps, 'changes', 'changes', {
      title: 'Admin changes',
      values: q.values(),
      entities: ENTITIES.map((e) => ({ value: e, selected: e === filter.entity })),
      changes: result.items.map(changeView),
      error,
      filtered: Object.keys(filter).length > 0,
      next: result.next_cursor === null ? undefined : `/admin/changes?${filters ? `${filters}&` : ''}cursor=${encodeURIComponent(result.next_cursor)}`,
    });
  });
}
