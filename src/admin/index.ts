import { adminApiMiddleware, ADMIN_API_PREFIX, type AdminApiDeps } from './api.ts';

/**
 * The admin side of idjag, as one factory for the composition (src/main.ts). Today: the JSON API under
 * /admin/api. The HTML pages will mount here too, on the same domain modules (rules.ts, clients.ts,
 * servers.ts, users.ts, groups.ts, audit-query.ts, simulate.ts, signing-keys.ts, document.ts, changes.ts).
 */
export type AdminDeps = AdminApiDeps;

export { ADMIN_API_PREFIX };

export function createAdmin(deps: AdminDeps) {
  return { middleware: adminApiMiddleware(deps), apiBase: ADMIN_API_PREFIX };
}
