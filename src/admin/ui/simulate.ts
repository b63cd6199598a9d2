import { simulate, SimulationInput, type SimulationResult } from '../simulate.ts';
import { defined, fieldErrors, Form, issuesOf } from './forms.ts';
import { catalog, select } from './options.ts';
import { page, type UiDeps, type UiRouter } from './page.ts';

/**
 * "What if": the decision the token endpoint would make, from the same target resolution and policy engine
 * (src/admin/simulate.ts), without issuing or recording anything. A GET form: running it changes nothing, and
 * a result is a link (the audit detail page links a decision to its replay here).
 */

const FIELDS = ['client_id', 'user', 'audience', 'resource', 'scope', 'auth_age', 'authorization_details', 'dpop', 'dpop_jkt'] as const;

export function simulatorRoutes(r: UiRouter, deps: UiDeps): void {
  r.get('/simulate', async (ctx) => {
    const q = Form.query(ctx);
    const c = await catalog(deps.db);
    const values = q.values();
    let result: SimulationResult | undefined;
    let errors: Record<string, string> = {};
    let general: string[] = [];
    if (q.text('client_id') !== undefined || q.text('user') !== undefined || q.checked('run')) {
      try {
        const input = q.parse(SimulationInput, defined({
          client_id: q.required('client_id', 'choose the client'),
          user: q.required('user', 'enter a username'),
          audience: q.required('audience', 'choose the Resource AS'),
          resource: q.text('resource'),
          scope: q.words('scope').join(' ') || undefined,
          auth_age: q.int('auth_age'),
          // as typed: the exchange parses it (RFC 9396), so its answer is the token endpoint's
          authorization_details: q.text('authorization_details'),
          dpop: q.checked('dpop'),
          dpop_jkt: q.text('dpop_jkt'),
        }));
        result = await simulate(deps.db, input, { issuer: deps.issuer, tenant: deps.tenant });
      } catch (err) {
        const issues = issuesOf(err);
        if (!issues) throw err;
        ctx.status = 400;
        ({ fields: errors, general } = fieldErrors(issues, FIELDS));
      }
    }
    page(ctx, deps, 'simulate', 'simulate', {
      title: 'Simulator',
      values,
      errors,
      general,
      clients: c.clients,
      audiences: select(c.audiences, values.audience),
      resources: select(c.resources, values.resource),
      result,
      granted: result?.scopes.join(' '),
      claims: result?.id_jag ? JSON.stringify(result.id_jag.claims, null, 2) : undefined,
    });
  });
}
