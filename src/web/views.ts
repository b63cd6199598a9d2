import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Handlebars from 'handlebars';

const VIEWS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'views');

export type Render = (view: string, data?: Record<string, unknown>) => string;

/**
 * Handlebars views from `views/`, compiled once. `{{x}}` escapes; the only triple-stash is the layout's
 * `{{{body}}}`, which holds an already rendered (and so already escaped) view.
 */
export function loadViews(dir = VIEWS_DIR): Render {
  const hb = Handlebars.create();
  hb.registerHelper('eq', (a: unknown, b: unknown) => a === b);
  hb.registerHelper('join', (list: unknown, sep: unknown) => (Array.isArray(list) ? list.join(typeof sep === 'string' ? sep : ', ') : ''));
  const partialsDir = join(dir, 'partials');
  for (const file of safeList(partialsDir)) hb.registerPartial(basename(file, '.hbs'), readFileSync(join(partialsDir, file), 'utf8'));
  const templates = new Map<string, Handlebars.TemplateDelegate>();
  for (const file of safeList(dir)) templates.set(basename(file, '.hbs'), hb.compile(readFileSync(join(dir, file), 'utf8'), { strict: false }));
  const layout = templates.get('layout');
  if (!layout) throw new Error(`no layout.hbs in ${dir}`);
  return (view, data = {}) => {
    const template = templates.get(view);
    if (!template) throw new Error(`no view named ${view}`);
    return layout({ ...data, body: template(data) });
  };
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => f.endsWith('.hbs'));
  } catch {
    return [];
  }
}
