import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { applyDocument, parseDocument, type ConfigDocument } from '../src/admin/document.ts';
import { DEVELOPMENT_URLS, type UrlPolicy } from '../src/admin/fields.ts';
import type { DB } from '../src/db/index.ts';
import { DEFAULT_SEED_FILE } from '../src/package-root.ts';

/** seed/seed.json, the development data `npm start` seeds an empty database with */
export const SEED_FILE = DEFAULT_SEED_FILE;

/** A seed document that cannot be read or is not a valid configuration document, named with what is wrong. */
export class SeedError extends Error {}

/** Reads and validates a seed document. `${ISSUER}` in it becomes the configured issuer. */
export function readSeed(file: string, issuer: string): ConfigDocument {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new SeedError(`cannot read the seed document ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    return parseDocument(raw, { ISSUER: issuer });
  } catch (err) {
    if (!(err instanceof z.ZodError)) throw err;
    const lines = err.issues.map((i) => `  ${i.path.join('.') || '(document)'}: ${i.message}`);
    throw new SeedError(`the seed document ${file} is not a valid configuration document:\n${lines.join('\n')}`);
  }
}

/** Applies the seed document (idempotent). `${ISSUER}` in it becomes the configured issuer; `urls` as for the admin (https only in production). */
export async function applySeed(db: DB, issuer: string, file = SEED_FILE, urls: UrlPolicy = DEVELOPMENT_URLS): Promise<void> {
  await applyDocument(db, readSeed(file, issuer), { urls });
}

/** First start: seed only a database with no users and no clients, so a deliberate empty one stays empty after. */
export async function seedIfEmpty(db: DB, issuer: string, file = SEED_FILE, urls: UrlPolicy = DEVELOPMENT_URLS): Promise<boolean> {
  const users = await db.selectFrom('users').select('sub').limit(1).executeTakeFirst();
  const clients = await db.selectFrom('clients').select('client_id').limit(1).executeTakeFirst();
  if (users || clients) return false;
  await applySeed(db, issuer, file, urls);
  return true;
}
