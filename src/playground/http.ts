import { decodedJwts, redact, redactAuthorization, redactJson, redactUrl, shorten } from '../demo/trace.ts';

/**
 * The playground's HTTP client: every request it makes for the user is a real one, sent over HTTP, and kept
 * as it was sent and answered, for the page. What the page shows hides client secrets and shortens tokens
 * (src/demo/trace.ts, as the terminal demo prints them); the copy-as-curl command carries the session's own
 * tokens but never a client secret, which it reads from an environment variable.
 */

export interface Shown {
  name: string;
  value: string;
}

export interface HttpRecord {
  title: string;
  method: string;
  url: string;
  requestHeaders: Shown[];
  /** form parameters, or a JSON document, as shown */
  requestForm: Shown[] | undefined;
  requestJson: string | undefined;
  status: number | undefined;
  statusText: string;
  ok: boolean;
  responseHeaders: Shown[];
  responseBody: string;
  /** the JWTs in the answer's JSON, decoded */
  jwts: { field: string; header: string; claims: string }[];
  /** no answer at all (connection refused, timeout) */
  failure: string | undefined;
  curl: string;
  ms: number;
}

export interface Outgoing {
  title: string;
  method: 'GET' | 'POST';
  url: string;
  /** client_secret_basic; `secretVar` names the shell variable the curl command reads the secret from */
  basic?: { id: string; secret: string; secretVar: string };
  bearer?: string;
  headers?: Record<string, string>;
  form?: [string, string][];
  json?: unknown;
}

export interface HttpResult {
  record: HttpRecord;
  status: number | undefined;
  /** the answer parsed: JSON, or the JSON messages of an event stream (the last one); undefined otherwise */
  json: unknown;
}

const TIMEOUT_MS = 10_000;
/** what the page keeps of an answer */
const MAX_BODY = 64 * 1024;
const SHOWN_RESPONSE_HEADERS = ['content-type', 'cache-control', 'www-authenticate', 'retry-after', 'location', 'x-request-id'];

const basicHeader = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

/** Sends the request, and records it with its answer. A network failure is recorded, not thrown. */
export async function send(out: Outgoing): Promise<HttpResult> {
  const headers: Record<string, string> = { ...out.headers };
  if (out.basic) headers.authorization = basicHeader(out.basic.id, out.basic.secret);
  if (out.bearer) headers.authorization = `Bearer ${out.bearer}`;
  let body: string | undefined;
  if (out.form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(out.form).toString();
  } else if (out.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(out.json);
  }
  const started = performance.now();
  const record: HttpRecord = {
    title: out.title,
    method: out.method,
    url: redactUrl(new URL(out.url)),
    requestHeaders: Object.entries(headers).map(([name, value]) => ({ name, value: name === 'authorization' ? redactAuthorization(value) : value })),
    // the PKCE verifier is the code's proof of possession: shortened like a token
    requestForm: out.form?.map(([name, value]) => ({ name, value: name === 'code_verifier' ? shorten(value) : redact(name, value) })),
    requestJson: out.json === undefined ? undefined : JSON.stringify(redactJson(out.json), null, 2),
    status: undefined,
    statusText: '',
    ok: false,
    responseHeaders: [],
    responseBody: '',
    jwts: [],
    failure: undefined,
    curl: curlOf(out),
    ms: 0,
  };
  let res: Response;
  try {
    res = await fetch(out.url, { method: out.method, headers, ...(body === undefined ? {} : { body }), redirect: 'manual', signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (err) {
    record.failure = `no answer: ${(err as Error).name === 'TimeoutError' ? `nothing within ${TIMEOUT_MS / 1000} s` : (err as Error).message}`;
    record.ms = Math.round(performance.now() - started);
    return { record, status: undefined, json: undefined };
  }
  const text = (await res.text()).slice(0, MAX_BODY);
  record.ms = Math.round(performance.now() - started);
  record.status = res.status;
  record.statusText = res.statusText;
  record.ok = res.ok;
  record.responseHeaders = SHOWN_RESPONSE_HEADERS.flatMap((name) => {
    const value = res.headers.get(name);
    if (value === null) return [];
    return [{ name, value: name === 'location' ? redactUrl(new URL(value, out.url)) : value }];
  });
  const messages = parseBody(text, res.headers.get('content-type') ?? '');
  record.responseBody = messages.length
    ? messages.map((m) => JSON.stringify(redactJson(m), null, 2)).join('\n\n')
    : text;
  record.jwts = messages.flatMap((m) => decodedJwts(m)).map((j) => ({ field: j.field, header: JSON.stringify(j.header, null, 2), claims: JSON.stringify(j.claims, null, 2) }));
  return { record, status: res.status, json: messages.at(-1) };
}

/** JSON, or the JSON messages of a server-sent event stream (a Streamable HTTP MCP answer). */
function parseBody(text: string, contentType: string): unknown[] {
  if (contentType.includes('text/event-stream')) {
    return text.split('\n').filter((l) => l.startsWith('data:')).flatMap((l) => {
      try {
        return [JSON.parse(l.slice(5))];
      } catch {
        return [];
      }
    });
  }
  if (!contentType.includes('json')) return [];
  try {
    return [JSON.parse(text)];
  } catch {
    return [];
  }
}

const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;

/** The same request as a shell command; a client secret comes from `$secretVar`, never the page. */
export function curlOf(out: Outgoing): string {
  const lines = [`curl -sS${out.method === 'GET' ? '' : ` -X ${out.method}`} ${quote(out.url)}`];
  if (out.basic) lines.push(`-u "${out.basic.id.replace(/["$`\\]/g, '\\$&')}:\${${out.basic.secretVar}:?set ${out.basic.secretVar} to the client secret}"`);
  if (out.bearer) lines.push(`-H ${quote(`authorization: Bearer ${out.bearer}`)}`);
  for (const [name, value] of Object.entries(out.headers ?? {})) {
    if (name.toLowerCase() === 'x-request-id') continue;
    lines.push(`-H ${quote(`${name}: ${value}`)}`);
  }
  if (out.form) for (const [name, value] of out.form) lines.push(`--data-urlencode ${quote(`${name}=${value}`)}`);
  if (out.json !== undefined) lines.push(`-H 'content-type: application/json'`, `--data-raw ${quote(JSON.stringify(out.json))}`);
  return lines.join(' \\\n  ');
}
