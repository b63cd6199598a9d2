import { sql } from 'kysely';
import type { DB } from '../../db/index.ts';
import { AuditPage, searchAudit } from '../audit-query.ts';
import { listChanges } from '../changes.ts';
import { parseInput } from '../errors.ts';
import { decisionChart, type HourCount } from './chart.ts';
import { page, type UiDeps, type UiRouter } from './page.ts';

const HOUR_MS = 3600_000;

async function count(db: DB, table: 'clients' | 'mcp_servers' | 'resource_servers' | 'users'): Promise<number> {
  return Number((await db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
}

/** Decisions per hour since `fromHour`: one pass over the last day of the time index. */
export async function hourlyDecisions(db: DB, fromHour: number): Promise<HourCount[]> {
  const { rows } = await sql<{ hour: number; decision: string; n: number }>`
    select cast(at / ${sql.lit(HOUR_MS)} as integer) as hour, decision, count(*) as n from audit_log where at >= ${fromHour * HOUR_MS} group by 1, 2`.execute(db);
  const byHour = new Map<number, HourCount>();
  for (const r of rows) {
    const h = byHour.get(Number(r.hour)) ?? { hour: Number(r.hour), issued: 0, denied: 0 };
    // errors (the exchange failed on our side) are not grants either: they count with the denials
    if (r.decision === 'issued') h.issued += Number(r.n);
    else h.denied += Number(r.n);
    byHour.set(h.hour, h);
  }
  return [...byHour.values()];
}

export function dashboardRoutes(r: UiRouter, deps: UiDeps): void {
  const { db } = deps;
  r.get('/', async (ctx) => {
    const lastHour = Math.floor(Date.now() / HOUR_MS);
    const rules = await db.selectFrom('policy_rules').select(['enabled', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('enabled').execute();
    const enabledRules = Number(rules.find((x) => x.enabled === 1)?.n ?? 0);
    page(ctx, deps, 'dashboard', 'dashboard', {
      title: 'Dashboard',
      counts: {
        clients: await count(db, 'clients'),
        resourceServers: await count(db, 'resource_servers'),
        mcpServers: await count(db, 'mcp_servers'),
        rules: rules.reduce((a, x) => a + Number(x.n), 0),
        enabledRules,
        users: await count(db, 'users'),
      },
      chart: decisionChart(await hourlyDecisions(db, lastHour - 23), lastHour),
      latest: (await searchAudit(db, parseInput(AuditPage, { limit: 10 }))).items,
      changes: (await listChanges(db, { limit: 5 })).items,
    });
  });
}
