import { Browser, csrfFrom } from './browser.ts';

export interface Page {
  status: number;
  url: string;
  html: string;
  headers: Headers;
}

/** Follows redirects by hand (the Browser helper never does), filling idjag's login form when it shows up. */
export async function follow(browser: Browser, url: string, login?: { username: string; password: string }, first?: Response): Promise<Page> {
  let res = first ?? await browser.get(url);
  for (let hop = 0; hop < 15; hop++) {
    if ([301, 302, 303].includes(res.status)) {
      url = new URL(res.headers.get('location')!, url).toString();
      res = await browser.get(url);
      continue;
    }
    const html = await res.text();
    if (login && /action="\/interaction\/[^"]+\/login"/.test(html)) {
      const action = /action="(\/interaction\/[^"]+\/login)"/.exec(html)![1]!;
      url = new URL(action, url).toString();
      res = await browser.postForm(url, { _csrf: csrfFrom(html), ...login });
      continue;
    }
    return { status: res.status, url, html, headers: res.headers };
  }
  throw new Error(`too many redirects from ${url}`);
}

/**
 * The admin UI as a browser without JavaScript uses it: a cookie jar, forms posted with the CSRF token of the
 * page they came from.
 */
export class AdminUi {
  readonly base: string;
  readonly browser: Browser;
  /** the CSRF token of the last page read */
  csrf = '';

  constructor(base: string, browser = new Browser()) {
    this.base = base;
    this.browser = browser;
  }

  /** Opens `path`, signing in through idjag's own login page on the way when asked to. */
  async open(path: string, login?: { username: string; password: string }): Promise<Page> {
    const page = await follow(this.browser, `${this.base}${path}`, login);
    const token = /name="_csrf" value="([^"]+)"/.exec(page.html)?.[1];
    if (token) this.csrf = token;
    return page;
  }

  /** Posts a form (with the last page's CSRF token unless `_csrf` is given); returns the answer, redirects not followed. */
  async post(path: string, fields: Record<string, string | string[]> = {}): Promise<Response> {
    const body = new URLSearchParams();
    if (!('_csrf' in fields)) body.append('_csrf', this.csrf);
    for (const [k, v] of Object.entries(fields)) for (const item of [v].flat()) body.append(k, item);
    return this.browser.fetch(`${this.base}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  }

  /** Posts a form and follows the answer to the page it leads to. */
  async submit(path: string, fields: Record<string, string | string[]> = {}): Promise<Page> {
    const res = await this.post(path, fields);
    const page = await follow(this.browser, `${this.base}${path}`, undefined, res);
    const token = /name="_csrf" value="([^"]+)"/.exec(page.html)?.[1];
    if (token) this.csrf = token;
    return page;
  }
}

/** A browser signed in to the admin UI as `username`, on the dashboard. */
export async function adminSignIn(base: string, username = 'admin', password = 'admin'): Promise<AdminUi> {
  const ui = new AdminUi(base);
  const page = await ui.open('/admin', { username, password });
  if (page.status !== 200 || !page.html.includes('<h1>Dashboard</h1>')) throw new Error(`admin sign-in failed: ${page.status} ${page.url}\n${page.html.slice(0, 800)}`);
  return ui;
}

/** The error message shown next to the field `name`, if any (as the page says it, entities and all). */
export function fieldError(html: string, name: string): string | undefined {
  return new RegExp(`<p class="field-error" id="${name}-error" role="alert">([^<]*)</p>`).exec(html)?.[1];
}

/** HTML entities back to text, for comparing what a page says. */
export const text = (html: string) => html.replace(/&#x27;/g, "'").replace(/&quot;/g, '"').replace(/&#x3D;/g, '=').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#x60;/g, '`').replace(/&amp;/g, '&');
