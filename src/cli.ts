import { applySeed } from '../seed/index.ts';
import { ConfigError, loadConfig, positionalArgs } from './config/index.ts';
import { exclusively, migrateToLatest, openDatabase, type DB } from './db/index.ts';
import { ensureSigningKeys, KEY_ALGS, RETIRED_KEY_RETENTION_SECONDS, rotateSigningKeys } from './oidc/keys.ts';
import type { KeyPurpose } from './db/schema.ts';

/**
 * Operator commands against the configured database (same flags and env as `npm start`):
 *   migrate                 apply pending migrations
 *   seed                    apply seed/seed.json, or the document named by --seed FILE (idempotent)
 *   rotate-keys [purpose]   new signing keys take over; old ones stay published until what they signed expired
 * A running server picks up rotated keys within 30 s.
 */
const USAGE = 'usage: npm run migrate | npm run seed | npm run keys:rotate [-- id_token|id_jag] (with the same flags/env as npm start)';

async function run(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  const config = loadConfig(rest);
  const args = positionalArgs(rest);
  const issuer = config.issuer ?? `http://localhost:${config.port}`;
  const database = openDatabase(config.database);
  try {
    // one at a time with any idjag starting or rotating on the same PostgreSQL database
    return await exclusively(database, () => runCommand(command, args, database.db, database.location, issuer, config.seedFile, config.production));
  } finally {
    await database.close();
  }
}

async function runCommand(command: string | undefined, args: string[], db: DB, location: string, issuer: string, seedFile: string | undefined, production: boolean): Promise<number> {
  switch (command) {
    case 'migrate': {
      const { applied } = await migrateToLatest(db);
      console.log(applied.length ? `applied: ${applied.join(', ')}` : 'already up to date');
      return 0;
    }
    case 'seed': {
      await migrateToLatest(db);
      await ensureSigningKeys(db);
      await applySeed(db, issuer, seedFile, { httpsOnly: production });
      console.log(`seed ${seedFile ?? 'seed/seed.json'} applied to ${location} (issuer ${issuer})`);
      return 0;
    }
    case 'rotate-keys': {
      const purposes = args.length ? args : Object.keys(KEY_ALGS);
      const unknown = purposes.filter((p) => !(p in KEY_ALGS));
      if (unknown.length) {
        console.error(`unknown key purpose ${unknown.join(', ')}; use ${Object.keys(KEY_ALGS).join(' or ')}`);
        return 2;
      }
      await migrateToLatest(db);
      await ensureSigningKeys(db);
      const { retired, created } = await rotateSigningKeys(db, purposes as KeyPurpose[]);
      console.log(`new signing keys: ${created.join(', ')}`);
      console.log(`retired (still published for ${RETIRED_KEY_RETENTION_SECONDS / 3600} h): ${retired.join(', ') || 'none'}`);
      console.log('a running idjag picks the new keys up within 30 s');
      return 0;
    }
    default:
      console.error(USAGE);
      return 2;
  }
}

run().then((code) => process.exit(code), (err) => {
  console.error(err instanceof ConfigError ? err.message : `failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});

