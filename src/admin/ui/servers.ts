import type { Context } from 'koa';
import {
  createMcpServer, createResourceServer, deleteMcpServer, deleteResourceServer, getMcpServer, getResourceServer, listResourceServers,
  McpServerDoc, McpServerPatch, ResourceServerDoc, ResourceServerPatch, updateMcpServer, updateResourceServer,
  type McpServerView, type ResourceServerView,
} from '../servers.ts';
import { defined, Form, type FieldErrors } from './forms.ts';
import { actorOf, done, failed, page, param, submit, type UiDeps, type UiRouter } from './page.ts';

/** Resource authorization servers (ID-JAG audiences) and the MCP servers each one serves, with their scopes. */

const AS_FIELDS = ['issuer', 'name', 'aliases', 'enabled'] as const;
const MCP_FIELDS = ['resource', 'name', 'scopes', 'enabled'] as const;

const asPath = (id: string) => `/admin/servers/${encodeURIComponent(id)}`;
const mcpPath = (id: string) => `/admin/mcp-servers/${encodeURIComponent(id)}`;

const mcpFromForm = (f: Form) => ({ name: f.text('name'), scopes: f.words('scopes'), enabled: f.checked('enabled') });

export function serverRoutes(r: UiRouter, deps: UiDeps): void {
  const { db } = deps;

  const showAs = (ctx: Context, opts: { server?: ResourceServerView; values: Record<string, string>; errors?: FieldErrors; mcp?: { values: Record<string, string>; errors?: FieldErrors } }) =>
    page(ctx, deps, 'server-form', 'servers', {
      title: opts.server ? opts.server.name : 'New Resource AS',
      server: opts.server,
      values: opts.values,
      errors: opts.errors?.fields ?? {},
      general: opts.errors?.general ?? [],
      mcp: { values: { enabled: 'on', ...opts.mcp?.values }, errors: opts.mcp?.errors?.fields ?? {}, general: opts.mcp?.errors?.general ?? [] },
    });

  const asValues = (s: ResourceServerView) => defined({ issuer: s.issuer, name: s.name, aliases: s.aliases.join('\n'), enabled: s.enabled ? 'on' : undefined }) as Record<string, string>;
  const mcpValues = (m: McpServerView) => defined({ resource: m.resource, name: m.name, scopes: m.scopes.join(' '), enabled: m.enabled ? 'on' : undefined }) as Record<string, string>;

  r.get('/servers', async (ctx) => {
    page(ctx, deps, 'servers', 'servers', { title: 'Resource AS and MCP servers', servers: await listResourceServers(db) });
  });

  r.get('/servers/new', (ctx) => showAs(ctx, { values: { enabled: 'on' } }));

  r.post('/servers', async (ctx) => {
    const f = Form.of(ctx);
    await submit(ctx, f, AS_FIELDS, async () => {
      const input = f.parse(ResourceServerDoc, defined({ issuer: f.required('issuer', 'enter the issuer'), name: f.required('name', 'enter a name'), aliases: f.lines('aliases'), enabled: f.checked('enabled') }));
      const server = await createResourceServer(db, input, actorOf(ctx));
      done(ctx, asPath(server.id), `Resource AS ${server.issuer} created. Add its MCP servers below.`);
    }, async (errors, values) => showAs(ctx, { values, errors }));
  });

  r.get('/servers/:id', async (ctx) => {
    const server = await getResourceServer(db, param(ctx, 'id'));
    showAs(ctx, { server, values: asValues(server) });
  });

  r.post('/servers/:id', async (ctx) => {
    const server = await getResourceServer(db, param(ctx, 'id'));
    const f = Form.of(ctx);
    await submit(ctx, f, AS_FIELDS, async () => {
      const patch = f.parse(ResourceServerPatch, { name: f.required('name', 'enter a name'), aliases: f.lines('aliases'), enabled: f.checked('enabled') });
      await updateResourceServer(db, server.id, patch, actorOf(ctx));
      done(ctx, asPath(server.id), `Resource AS ${server.issuer} saved.`);
    }, async (errors, values) => showAs(ctx, { server, values: { ...values, issuer: server.issuer }, errors }));
  });

  r.post('/servers/:id/delete', async (ctx) => {
    const id = param(ctx, 'id');
    try {
      await deleteResourceServer(db, id, actorOf(ctx));
    } catch (err) {
      return failed(ctx, asPath(id), err);
    }
    done(ctx, '/admin/servers', 'Resource AS deleted.');
  });

  r.post('/servers/:id/mcp-servers', async (ctx) => {
    const server = await getResourceServer(db, param(ctx, 'id'));
    const f = Form.of(ctx);
    await submit(ctx, f, MCP_FIELDS, async () => {
      const input = f.parse(McpServerDoc, defined({ resource: f.required('resource', 'enter the resource identifier'), ...mcpFromForm(f), name: f.required('name', 'enter a name') }));
      const mcp = await createMcpServer(db, server.id, input, actorOf(ctx));
      done(ctx, asPath(server.id), `MCP server ${mcp.resource} added.`);
    }, async (errors, values) => showAs(ctx, { server, values: asValues(server), mcp: { values, errors } }));
  });

  const showMcp = (ctx: Context, mcp: McpServerView, values: Record<string, string>, errors?: FieldErrors) => page(ctx, deps, 'mcp-form', 'servers', {
    title: mcp.name, mcp, values, errors: errors?.fields ?? {}, general: errors?.general ?? [],
  });

  r.get('/mcp-servers/:id', async (ctx) => {
    const mcp = await getMcpServer(db, param(ctx, 'id'));
    showMcp(ctx, mcp, mcpValues(mcp));
  });

  r.post('/mcp-servers/:id', async (ctx) => {
    const mcp = await getMcpServer(db, param(ctx, 'id'));
    const f = Form.of(ctx);
    await submit(ctx, f, MCP_FIELDS, async () => {
      const patch = f.parse(McpServerPatch, { ...mcpFromForm(f), name: f.required('name', 'enter a name') });
      await updateMcpServer(db, mcp.id, patch, actorOf(ctx));
      done(ctx, mcpPath(mcp.id), `MCP server ${mcp.resource} saved.`);
    }, async (errors, values) => showMcp(ctx, mcp, { ...values, resource: mcp.resource }, errors));
  });

  r.post('/mcp-servers/:id/delete', async (ctx) => {
    const mcp = await getMcpServer(db, param(ctx, 'id'));
    try {
      await deleteMcpServer(db, mcp.id, actorOf(ctx));
    } catch (err) {
      return failed(ctx, mcpPath(mcp.id), err);
    }
    done(ctx, asPath(mcp.resource_server_id), `MCP server ${mcp.resource} deleted.`);
  });
}
