import type { AuditLogTable } from '../../src/db/schema.ts';
import type { TestServer } from './server.ts';

/** How many audit rows the server has written. */
export async function auditCount(server: Pick<TestServer, 'database'>): Promise<number> {
  const { n } = await server.database.db.selectFrom('audit_log').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
  return Number(n);
}

/** The newest `n` audit rows, newest first. */
export function lastAuditRows(server: Pick<TestServer, 'database'>, n: number): Promise<AuditLogTable[]> {
  return server.database.db.selectFrom('audit_log').selectAll().orderBy('at', 'desc').orderBy('id', 'desc').limit(n).execute();
}

/** The newest audit row. */
export async function lastAuditRow(server: Pick<TestServer, 'database'>): Promise<AuditLogTable> {
  const [row] = await lastAuditRows(server, 1);
  if (!row) throw new Error('no audit row');
  return row;
}
