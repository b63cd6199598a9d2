import type { Context } from 'koa';
import { TOKEN_EXCHANGE } from '../../exchange/request.ts';
import { listChanges } from '../changes.ts';
import {
  ClientCreate, ClientPatch, createClient, deleteClient, getClient, listClients, providerClientValidator, rotateClientSecret,
  setClientDisabled, updateClient, type ClientView,
} from '../clients.ts';
import { invalid } from '../errors.ts';
import { defined, Form, type FieldErrors } from './forms.ts';
import { actorOf, checkboxes, done, failed, page, param, submit, type UiDeps, type UiRouter } from './page.ts';
import { ADMIN_UI_CLIENT_ID } from './sign-in.ts';

const FIELDS = ['client_id', 'client_name', 'type', 'token_endpoint_auth_method', 'redirect_uris', 'post_logout_redirect_uris', 'grant_types', 'scope', 'first_party', 'dpop_bound_access_tokens'] as const;

const GRANTS = ['authorization_code', 'refresh_token', 'client_credentials', TOKEN_EXCHANGE];
const GRANT_LABELS: Record<string, string> = {
  authorization_code: 'authorization code (sign users in)',
  refresh_token: 'refresh token',
  client_credentials: 'client credentials',
  [TOKEN_EXCHANGE]: 'token exchange for ID-JAGs',
};
const SECRET_METHODS = ['client_secret_basic', 'client_secret_post'];

/** The metadata fields the form edits; others (jwks, jwks_uri) are kept as they are. */
function metadataFromForm(f: Form) {
  const grants = f.all('grant_types');
  return {
    client_name: f.text('client_name'),
    redirect_uris: f.lines('redirect_uris'),
    post_logout_redirect_uris: f.lines('post_logout_redirect_uris'),
    grant_types: grants,
    // the provider serves the code flow only: a client that signs users in takes `code`, any other none
    response_types: grants.includes('authorization_code') ? ['code'] : [],
    scope: f.words('scope').join(' ') || undefined,
    first_party: f.checked('first_party'),
    dpop_bound_access_tokens: f.checked('dpop_bound_access_tokens') || undefined,
  };
}

function createFromForm(f: Form): ClientCreate {
  const type = f.text('type') ?? 'confidential';
  const method = type === 'public' ? 'none' : f.text('token_endpoint_auth_method') ?? 'client_secret_basic';
  return f.parse(ClientCreate, defined({ client_id: f.text('client_id'), type, token_endpoint_auth_method: method, ...metadataFromForm(f) }));
}

function patchFromForm(f: Form): ClientPatch {
  const m = metadataFromForm(f);
  return f.parse(ClientPatch, {
    ...m, client_name: m.client_name ?? null, scope: m.scope ?? null, dpop_bound_access_tokens: m.dpop_bound_access_tokens ?? null,
    token_endpoint_auth_method: f.text('token_endpoint_auth_method'),
  });
}

function formValues(c: ClientView): Record<string, string> {
  return defined({
    client_id: c.client_id,
    client_name: c.client_name,
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    redirect_uris: (c.redirect_uris ?? []).join('\n'),
    post_logout_redirect_uris: (c.post_logout_redirect_uris ?? []).join('\n'),
    scope: c.scope,
    first_party: c.first_party ? 'on' : undefined,
    dpop_bound_access_tokens: c.dpop_bound_access_tokens ? 'on' : undefined,
  }) as Record<string, string>;
}

/** The admin UI's own client is repaired at every sign-in: changing it here would only lock admins out meanwhile. */
function refuseOwnClient(clientId: string): void {
  if (clientId === ADMIN_UI_CLIENT_ID) throw invalid(['client_id'], `${ADMIN_UI_CLIENT_ID} is the admin UI's own client, managed by idjag`);
}

export function clientRoutes(r: UiRouter, deps: UiDeps): void {
  const { db } = deps;
  const validate = providerClientValidator(deps.provider);
  const path = (id: string) => `/admin/clients/${encodeURIComponent(id)}`;

  const showForm = async (ctx: Context, opts: { client?: ClientView; values: Record<string, string>; grants: string[]; errors?: FieldErrors }) => {
    const method = opts.values.token_endpoint_auth_method ?? 'client_secret_basic';
    // creating, the type radio says public (none); editing, the method is the type
    const methods = opts.client ? [...SECRET_METHODS, 'none', ...(SECRET_METHODS.includes(method) || method === 'none' ? [] : [method])] : SECRET_METHODS;
    page(ctx, deps, 'client-form', 'clients', {
      title: opts.client ? `Client ${opts.client.client_id}` : 'New client',
      client: opts.client,
      managed: opts.client?.client_id === ADMIN_UI_CLIENT_ID,
      values: opts.values,
      publicType: opts.values.type === 'public',
      methods: methods.map((m) => ({ value: m, selected: m === method })),
      grants: checkboxes(GRANTS, opts.grants, GRANT_LABELS),
      errors: opts.errors?.fields ?? {},
      general: opts.errors?.general ?? [],
      changes: opts.client ? (await listChanges(db, { entity: 'client', entity_id: opts.client.client_id, limit: 10 })).items : [],
    });
  };

  /** A secret is shown once, on the page that answers the change that made it, and never again. */
  const showSecret = (ctx: Context, clientId: string, secret: string, created: boolean) => page(ctx, deps, 'client-secret', 'clients', {
    title: created ? 'Client created' : 'New client secret', clientId, secret, created,
  });

  r.get('/clients', async (ctx) => {
    const clients = await listClients(db);
    page(ctx, deps, 'clients', 'clients', {
      title: 'Clients',
      clients: clients.map((c) => ({ ...c, managed: c.client_id === ADMIN_UI_CLIENT_ID, grant_labels: (c.grant_types ?? []).map((g) => GRANT_LABELS[g]?.split(' (')[0] ?? g) })),
    });
  });

  r.get('/clients/new', async (ctx) => {
    await showForm(ctx, { values: { type: 'confidential', token_endpoint_auth_method: 'client_secret_basic' }, grants: ['authorization_code'] });
  });

  r.post('/clients', async (ctx) => {
    const form = Form.of(ctx);
    await submit(ctx, form, FIELDS, async () => {
      const input = createFromForm(form);
      if (input.client_id) refuseOwnClient(input.client_id);
      const client = await createClient(db, input, actorOf(ctx), validate);
      if (client.client_secret) return showSecret(ctx, client.client_id, client.client_secret, true);
      done(ctx, path(client.client_id), `Client ${client.client_id} created.`);
    }, (errors, values) => showForm(ctx, { values, grants: form.all('grant_types'), errors }));
  });

  r.get('/clients/:id', async (ctx) => {
    const client = await getClient(db, param(ctx, 'id'));
    await showForm(ctx, { client, values: formValues(client), grants: client.grant_types ?? [] });
  });

  r.post('/clients/:id', async (ctx) => {
    const client = await getClient(db, param(ctx, 'id'));
    const form = Form.of(ctx);
    await submit(ctx, form, FIELDS, async () => {
      refuseOwnClient(client.client_id);
      const saved = await updateClient(db, client.client_id, patchFromForm(form), actorOf(ctx), validate);
      // switching to a secret-based method generates the secret the client never had
      if (saved.client_secret) return showSecret(ctx, saved.client_id, saved.client_secret, false);
      done(ctx, path(client.client_id), `Client ${client.client_id} saved.`);
    }, (errors, values) => showForm(ctx, { client, values: { ...values, client_id: client.client_id }, grants: form.all('grant_types'), errors }));
  });

  r.post('/clients/:id/rotate-secret', async (ctx) => {
    const id = param(ctx, 'id');
    try {
      refuseOwnClient(id);
      const { client_secret: secret } = await rotateClientSecret(db, id, actorOf(ctx));
      showSecret(ctx, id, secret, false);
    } catch (err) {
      failed(ctx, path(id), err);
    }
  });

  for (const action of ['enable', 'disable', 'delete'] as const) {
    r.post(`/clients/:id/${action}`, async (ctx) => {
      const id = param(ctx, 'id');
      try {
        refuseOwnClient(id);
        if (action === 'delete') await deleteClient(db, id, actorOf(ctx));
        else await setClientDisabled(db, id, action === 'disable', actorOf(ctx));
      } catch (err) {
        return failed(ctx, action === 'delete' ? '/admin/clients' : path(id), err);
      }
      done(ctx, action === 'delete' ? '/admin/clients' : path(id), `Client ${id} ${action === 'delete' ? 'deleted' : `${action}d`}.`);
    });
  }
}
