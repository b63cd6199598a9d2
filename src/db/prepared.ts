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
