import { tokenRequest } from './browser.ts';

export const ADMIN_CLI = { id: 'idjag-admin-cli', secret: 'idjag-admin-cli-secret' };

/** A client_credentials access token from the real token endpoint, as a CI job would get one (`scope` null: none asked). */
export async function clientToken(base: string, client: { id: string; secret: string } = ADMIN_CLI, scope: string | null = 'admin'): Promise<string> {
  const res = await tokenRequest(base, { grant_type: 'client_credentials', ...(scope === null ? {} : { scope }) }, client);
  if (res.status !== 200) throw new Error(`client_credentials failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.access_token as string;
}

export interface ApiResponse {
  status: number;
  body: any;
  headers: Headers;
  text: string;
}

/** The admin API as a script would call it: JSON in, JSON out, a Bearer token. */
export function adminClient(base: string, token: string | undefined) {
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse> => {
    const res = await fetch(`${base}/admin/api${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    return { status: res.status, body: parsed, headers: res.headers, text };
  };
  return {
    call,
    get: (path: string) => call('GET', path),
    post: (path: string, body: unknown = {}) => call('POST', path, body),
    patch: (path: string, body: unknown) => call('PATCH', path, body),
    put: (path: string, body: unknown) => call('PUT', path, body),
    delete: (path: string) => call('DELETE', path),
  };
}

export type AdminClient = ReturnType<typeof adminClient>;

/** Connects with the seeded admin client. */
export async function connectAdmin(base: string): Promise<AdminClient> {
  return adminClient(base, await clientToken(base));
}
