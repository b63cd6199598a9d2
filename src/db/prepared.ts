import { createHash } from 'node:crypto';
import type { CompiledQuery, Compilable, Kysely } from 'kysely';

const SENTINEL = '\u0000idjag.param:';

/** Names a parameter in a prepared query; typed as the column it is compared with or written to. */
export type Param = <T = string>(name: string) => T;
const param: Param = <T>(name: string) => `${SENTINEL}${name}` as T;

interface Template {
  compiled: CompiledQuery;
  /** for each position: the argument name, or a constant the query carries */
  slots: ({ name: string } | { value: unknown })[];
}

/**
 * The SQL of every prepared query, with a statement name of its own: on PostgreSQL the pool's clients run these
 * as named prepared statements (src/db/index.ts), so the server parses and plans each once per connection
 * instead of on every exchange. A handful of texts (one per prepared query and dialect), never request data.
 */
export const STATEMENT_NAMES = new Map<string, string>();
const nameOf = (sql: string) => `idjag_${createHash('sha256').update(sql).digest('base64url').slice(0, 16)}`;

/**
 * A query built with kysely once, then run with fresh arguments: on the token endpoint's path, building and
 * compiling the same query tree for every request costs more than SQLite spends running it. The builder is
 * ordinary kysely code; `p('name')` marks where an argument goes. The compiled form is kept per database
 * (each dialect compiles its own SQL), and the statement cache below kysely reuses the prepared statement.
 */
export function prepared<DB, Args extends object, Row>(
  build: (db: Kysely<DB>, p: Param) => Compilable<Row>,
) {
  const templates = new WeakMap<Kysely<DB>, Template>();
  const template = (db: Kysely<DB>): Template => {
    let t = templates.get(db);
    if (!t) {
      const compiled = build(db, param).compile();
      STATEMENT_NAMES.set(compiled.sql, nameOf(compiled.sql));
      const slots = compiled.parameters.map((v) => (typeof v === 'string' && v.startsWith(SENTINEL) ? { name: v.slice(SENTINEL.length) } : { value: v }));
      t = { compiled, slots };
      templates.set(db, t);
    }
    return t;
  };
  /** `via`: run on this transaction of `db` (the query is compiled once, for `db`) */
  return async (db: Kysely<DB>, args: Args, via: Kysely<DB> = db): Promise<Row[]> => {
    const { compiled, slots } = template(db);
    const parameters = slots.map((s) => {
      if (!('name' in s)) return s.value;
      if (!(s.name in args)) throw new Error(`prepared query: no argument ${s.name}`);
      return (args as Record<string, unknown>)[s.name];
    });
    const { rows } = await via.executeQuery<Row>({ ...compiled, parameters } as CompiledQuery<Row>);
    return rows;
  };
}
