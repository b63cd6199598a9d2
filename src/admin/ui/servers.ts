import type { Context } from 'koa';
import { RELEASABLE_CLAIMS, SUB_ID_FORMATS } from '../../db/catalog.ts';
import {
  AudSubInput, createMcpServer, createResourceServer, deleteMcpServer, deleteResourceServer, getMcpServer, getResourceServer, listResourceServers,
  McpServerDoc, McpServerPatch, ResourceServerDoc, ResourceServerPatch, setAudienceSubject, updateMcpServer, updateResourceServer,
  type McpServerView, type ResourceServerView,
} from '../servers.ts';
import { defined, Form, type FieldErrors } from './forms.ts';
import { actorOf, checkboxes, done, failed, page, param, submit, type UiDeps, type UiRouter } from './page.ts';

/**
 * Resource authorization servers (ID-JAG audiences) with what their ID-JAGs say about the user (released
 * claims, `sub_id`, `aud_tenant`, each user's `aud_sub`), and the MCP servers each one serves, with their scopes.
 */

const AS_FIELDS = ['issuer', 'name', 'aliases', 'enabled', 'released_claims', 'sub_id_format', 'aud_tenant'] as const;
const MCP_FIELDS = ['resource', 'name', 'scopes', 'enabled'] as const;
const AUD_SUB_FIELDS = ['username', 'aud_sub'] as const;

const CLAIM_LABELS: Record<string, string> = {
  email: 'email', email_verified: 'email_verified', name: 'name (full name)', preferred_username: 'preferred_username (the username here)', groups: 'groups',
};

/** The release as the form states it: the checked claims, the sub_id format, aud_tenant. */
const releaseFromForm = (f: Form) => ({ released_claims: f.all('released_claims'), sub_id_format: f.text('sub_id_format'), aud_tenant: f.text('aud_tenant') });

/** `aud_subs.alice` (an unknown user, a taken aud_sub) is shown at the mapping form's fields. */
const audSubField = (path: (string | number)[]) => (path[0] === 'aud_subs' ? (path.length > 1 ? 'username' : 'aud_sub') : path.length ? String(path[0]) : undefined);

const asPath = (id: string) => `/admin/servers/${encodeURIComponent(id)}`;
const mcpPath = (id: string) => `/admin/mcp-servers/${encodeURIComponent(id)}`;

const mcpFromForm = (f: Form) => ({ name: f.text('name'), scopes: f.words('scopes'), enabled: f.checked('enabled') });

export function serverRoutes(r: UiRouter, deps: UiDeps): void {
  const { db } = deps;

  interface SubForm { values: Record<string, string>; errors?: FieldErrors }
  const showAs = (ctx: Context, opts: { server?: ResourceServerView; values: Record<string, string>; claims: string[]; errors?: FieldErrors; mcp?: SubForm; audSub?: SubForm }) =>
    page(ctx, deps, 'server-form', 'servers', {
      title: opts.server ? opts.server.name : 'New Resource AS',
      server: opts.server,
      values: opts.values,
      claims: checkboxes(RELEASABLE_CLAIMS, opts.claims, CLAIM_LABELS),
      formats: SUB_ID_FORMATS.map((value) => ({ value, selected: opts.values.sub_id_format === value })),
      audSubs: Object.entries(opts.server?.aud_subs ?? {}).map(([username, audSub]) => ({ username, audSub })),
      errors: opts.errors?.fields ?? {},
      general: opts.errors?.general ?? [],
      mcp: { values: { enabled: 'on', ...opts.mcp?.values }, errors: opts.mcp?.errors?.fields ?? {}, general: opts.mcp?.errors?.general ?? [] },
      audSub: { values: opts.audSub?.values ?? {}, errors: opts.audSub?.errors?.fields ?? {}, general: opts.audSub?.errors?.general ?? [] },
    });

  const asValues = (s: ResourceServerView) => defined({
    issuer: s.issuer, name: s.name, aliases: s.aliases.join('\n'), enabled: s.enabled ? 'on' : undefined, sub_id_format: s.sub_id_format, aud_tenant: s.aud_tenant,
  }) as Record<string, string>;
  const mcpValues = (m: McpServerView) => defined({ resource: m.resource, name: m.name, scopes: m.scopes.join(' '), enabled: m.enabled ? 'on' : undefined }) as Record<string, string>;

  r.get('/servers', async (ctx) => {
    page(ctx, deps, 'servers', 'servers', { title: 'Resource AS and MCP servers', servers: await listResourceServers(db) });
  });

  // a new Resource AS releases no identity claim until an admin ticks one
  r.get('/servers/new', (ctx) => showAs(ctx, { values: { enabled: 'on' }, claims: [] }));

  r.post('/servers', async (ctx) => {
    const f = Form.of(ctx);
    await submit(ctx, f, AS_FIELDS, async () => {
      const input = f.parse(ResourceServerDoc, defined({
        issuer: f.required('issuer', 'enter the issuer'), name: f.required('name', 'enter a name'), aliases: f.lines('aliases'), enabled: f.checked('enabled'), ...releaseFromForm(f),
      }));
      const server = await createResourceServer(db, input, actorOf(ctx), deps.urls);
      done(ctx, asPath(server.id), `Resource AS ${server.issuer} created. Add its MCP servers below.`);
    }, async (errors, values) => showAs(ctx, { values, claims: f.all('released_claims'), errors }));
  });

  r.get('/servers/:id', async (ctx) => {
    const server = await getResourceServer(db, param(ctx, 'id'));
    showAs(ctx, { server, values: asValues(server), claims: server.released_claims });
  });

  r.post('/servers/:id', async (ctx) => {
    const server = await getResourceServer(db, param(ctx, 'id'));
    const f = Form.of(ctx);
    await submit(ctx, f, AS_FIELDS, async () => {
      const release = releaseFromForm(f);
      const patch = f.parse(ResourceServerPatch, {
        name: f.required('name', 'enter a name'), aliases: f.lines('aliases'), enabled: f.checked('enabled'),
        released_claims: release.released_claims, sub_id_format: release.sub_id_format ?? null, aud_tenant: release.aud_tenant ?? null,
      });
      await updateResourceServer(db, server.id, patch, actorOf(ctx));
      done(ctx, asPath(server.id), `Resource AS ${server.issuer} saved.`);
    }, async (errors, values) => showAs(ctx, { server, values: { ...values, issuer: server.issuer }, claims: f.all('released_claims'), errors }));
  });

  // one user's aud_sub at this Resource AS: set or replaced, and removed
  r.post('/servers/:id/aud-subs', async (ctx) => {
    const server = await getResourceServer(db, param(ctx, 'id'));
    const f = Form.of(ctx);
    await submit(ctx, f, AUD_SUB_FIELDS, async () => {
      const username = f.required('username', 'enter the username');
      const { aud_sub: audSub } = f.parse(AudSubInput, { aud_sub: f.required('aud_sub', 'enter the identifier the Resource AS knows this user by') });
      await setAudienceSubject(db, server.id, username, audSub, actorOf(ctx));
      done(ctx, asPath(server.id), `aud_sub of ${username} at ${server.issuer} saved.`);
    }, async (errors, values) => showAs(ctx, { server, values: asValues(server), claims: server.released_claims, audSub: { values, errors } }), audSubField);
  });

  r.post('/servers/:id/aud-subs/:username/delete', async (ctx) => {
    const id = param(ctx, 'id');
    const username = param(ctx, 'username');
    try {
      await setAudienceSubject(db, id, username, null, actorOf(ctx));
    } catch (err) {
      return failed(ctx, asPath(id), err);
    }
    done(ctx, asPath(id), `aud_sub of ${username} removed.`);
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
      const mcp = await createMcpServer(db, server.id, input, actorOf(ctx), deps.urls);
      done(ctx, asPath(server.id), `MCP server ${mcp.resource} added.`);
    }, async (errors, values) => showAs(ctx, { server, values: asValues(server), claims: server.released_claims, mcp: { values, errors } }));
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
