import { Readable } from 'node:stream';
import type { Context } from 'koa';
import { AccessExport, AccessPage, accessPage, exportAccess } from '../access.ts';
import { parseInput } from '../errors.ts';
import { defined, Form, timeInput, withFieldErrors } from './forms.ts';
import { catalog, select } from './options.ts';
import { page, queryWithout, type UiDeps, type UiRouter } from './page.ts';

/**
 * Effective access (src/admin/access.ts): who can reach an MCP server or a Resource AS, through which client and
 * rules, with which scopes; what a user can reach; whom a client serves. Filtered, in pages, exported whole.
 */

const FILTERS = ['audience', 'resource', 'client_id', 'user', 'group', 'at'] as const;

function filterFrom(q: Form) {
  return defined({
    audience: q.text('audience'),
    resource: q.text('resource'),
    client_id: q.text('client_id'),
    user: q.text('user'),
    group: q.text('group'),
    at: timeInput(q.text('at')),
  });
}

export function accessRoutes(r: UiRouter, deps: UiDeps): void {
  const { db } = deps;

  r.get('/access', async (ctx) => {
    const q = Form.query(ctx);
    const filter = filterFrom(q);
    const c = await catalog(db);
    const { result, fields: errors, general } = await withFieldErrors(ctx, FILTERS,
      () => accessPage(db, parseInput(AccessPage, { ...filter, ...defined({ cursor: q.text('cursor') }), limit: 50 })));
    const filters = queryWithout(ctx, 'cursor');
    const exportLink = (format: string) => `/admin/access/export?${new URLSearchParams({ ...filter, format } as Record<string, string>)}`;
    page(ctx, deps, 'access', 'access', {
      title: 'Effective access',
      values: q.values(),
      errors,
      general,
      audiences: select(c.audiences, filter.audience),
      resources: select(c.resources, filter.resource),
      clients: c.clients,
      groups: select(c.groups.map((g) => ({ value: g, label: g })), filter.group),
      result: result && {
        ...result,
        items: result.items.map((row) => ({ ...row, other_scopes: row.scopes.filter((s) => !row.default_scopes.includes(s)) })),
      },
      filtered: Object.keys(filter).length > 0,
      paged: q.text('cursor') !== undefined,
      first: `/admin/access${filters ? `?${filters}` : ''}`,
      next: result?.next_cursor ? `/admin/access?${filters ? `${filters}&` : ''}cursor=${encodeURIComponent(result.next_cursor)}` : undefined,
      csv: exportLink('csv'),
      jsonl: exportLink('jsonl'),
    });
  });

  // Streamed, a chunk of users at a time, like the API's export: the whole answer, never held in memory.
  r.get('/access/export', async (ctx: Context) => {
    const q = Form.query(ctx);
    const { format, ...filter } = parseInput(AccessExport, { ...filterFrom(q), ...defined({ format: q.text('format') }) });
    const chunks = await exportAccess(db, filter, format);
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    ctx.type = format === 'csv' ? 'text/csv; charset=utf-8' : 'application/jsonl; charset=utf-8';
    ctx.set('Content-Disposition', `attachment; filename="idjag-access-${stamp}.${format}"`);
    ctx.body = Readable.from(chunks);
  });
}
