import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyDocument, parseDocument } from '../src/admin/document.ts';
import type { DB } from '../src/db/index.ts';

export const SEED_FILE = join(dirname(fileURLToPath(import.meta.url)), 'seed.json');

/** Applies the seed document (idempotent). `${ISSUER}` in it becomes the configured issuer. */
export async function applySeed(db: DB, issuer: string, file = SEED_FILE): Promise<void> {
  const doc = parseDocument(JSON.parse(readFileSync(file, 'utf8')), { ISSUER: issuer });
  await applyDocument(db, doc);
}

/** First start: seed only a database with no users and no clients, so a deliberate empty one stays empty after. */
export async function seedIfEmpty(db: DB, issuer: string): Promise<boolean> {
  const users = await db.selectFrom('users').select('sub').limit(1).executeTakeFirst();
  const clients = await db.selectFrom('clients').select('client_id').limit(1).executeTakeFirst();
  if (users || clients) return false;
  await applySeed(db, issuer);
  return true;
}
