import { randomBytes } from 'node:crypto';
import type { DB } from '../db/index.ts';

export interface Todo {
  id: string;
  text: string;
  /** the client that added it, as the demo Resource AS knows it */
  client_id: string;
  /** ISO 8601 */
  created_at: string;
}

/** A todo list per user; the owner is always the access token's subject, never a tool argument. */
export class TodoStore {
  readonly #db: DB;

  constructor(db: DB) {
    this.#db = db;
  }

  async list(ownerSub: string): Promise<Todo[]> {
    const rows = await this.#db.selectFrom('demo_todos').select(['id', 'text', 'client_id', 'created_at'])
      .where('owner_sub', '=', ownerSub).orderBy('created_at').orderBy('id').execute();
    return rows.map(toTodo);
  }

  async add(ownerSub: string, text: string, clientId: string): Promise<Todo> {
    const row = { id: todoId(), owner_sub: ownerSub, text, client_id: clientId, created_at: Math.floor(Date.now() / 1000) };
    await this.#db.insertInto('demo_todos').values(row).execute();
    return toTodo(row);
  }
}

/**
 * Ids sort in creation order (milliseconds first), so items added within the same second still list in the
 * order they were added; the random tail keeps them unique across nodes.
 */
function todoId(): string {
  return `${Date.now().toString(36).padStart(9, '0')}${randomBytes(4).toString('hex')}`;
}

function toTodo(row: { id: string; text: string; client_id: string; created_at: number }): Todo {
  return { id: row.id, text: row.text, client_id: row.client_id, created_at: new Date(Number(row.created_at) * 1000).toISOString() };
}
