import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Handlebars from 'handlebars';
import { VIEWS_DIR } from '../package-root.ts';

export type Render = (view: string, data?: Record<string, unknown>) => string;

/**
 * Handlebars views from `views/`, compiled once: `views/login.hbs` is `login`, `views/admin/rules.hbs` is
 * `admin/rules`, and partials are named the same way under `views/partials/`. `{{x}}` escapes; the only
 * triple-stash is the layout's `{{{body}}}`, which holds an already rendered (and so already escaped) view.
 */
export function loadViews(dir = VIEWS_DIR): Render {
  const hb = Handlebars.create();
  hb.registerHelper('eq', (a: unknown, b: unknown) => a === b);
  hb.registerHelper('join', (list: unknown, sep: unknown) => (Array.isArray(list) ? list.join(typeof sep === 'string' ? sep : ', ') : ''));
  // for ids placed in URL paths and query strings (client ids may hold '/' and ':', usernames '@')
  hb.registerHelper('enc', (value: unknown) => encodeURIComponent(typeof value === 'string' || typeof value === 'number' ? value : ''));
  // ISO 8601 instants as the admin pages show them: to the second, in UTC
  hb.registerHelper('time', (iso: unknown) => (typeof iso === 'string' ? iso.replace('T', ' ').replace(/(\.\d+)?Z$/, '') : ''));
  hb.registerHelper('json', (value: unknown) => JSON.stringify(value, null, 2));
  // a partial's final newline would land in the middle of whatever line includes it
  for (const [name, file] of hbsFiles(join(dir, 'partials'))) hb.registerPartial(name, readFileSync(file, 'utf8').replace(/\n$/, ''));
  const templates = new Map<string, Handlebars.TemplateDelegate>();
  for (const [name, file] of hbsFiles(dir, '', ['partials', 'assets'])) templates.set(name, hb.compile(readFileSync(file, 'utf8'), { strict: false }));
  const layout = templates.get('layout');
  if (!layout) throw new Error(`no layout.hbs in ${dir}`);
  return (view, data = {}) => {
    const template = templates.get(view);
    if (!template) throw new Error(`no view named ${view}`);
    return layout({ ...data, body: template(data) });
  };
}

/** `[name, path]` of every .hbs file under `dir`, named by their path below it without the extension. */
function hbsFiles(dir: string, prefix = '', skip: string[] = []): [string, string][] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e): [string, string][] => {
    if (e.isDirectory()) return skip.includes(e.name) ? [] : hbsFiles(join(dir, e.name), `${prefix}${e.name}/`);
    return e.name.endsWith('.hbs') ? [[`${prefix}${e.name.slice(0, -4)}`, join(dir, e.name)]] : [];
  });
}
