/**
 * Migrations 0010 (claim release) and 0010b (authorization_details, actor_token): an upgrade changes no
 * ID-JAG (every Resource AS stored before keeps releasing email, the one claim idjag issued then), a Resource
 * AS created after releases nothing unless told, and both migrations step down again.
 */
import { Migrator, type Migration, type MigrationProvider } from 'kysely/migration';
import { migrations } from '../migrations/index.ts';
import { openDatabase } from '../src/db/index.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';

const provider: MigrationProvider = { getMigrations: async (): Promise<Record<string, Migration>> => migrations };

let scratch: TestDatabase;
beforeEach(async () => {
  scratch = await createTestDatabase('idjag-migrate-claims');
});
afterEach(() => scratch.dispose());

test('an upgrade keeps email for the Resource ASes it finds; a new one releases nothing; both step down', async () => {
  const database = openDatabase(scratch.location);
  try {
    const migrator = new Migrator({ db: database.db, provider });
    // up to the migration before these two, whatever other migrations exist
    const names = Object.keys(migrations).sort();
    expect((await migrator.migrateTo(names[names.indexOf('0010_claim_release') - 1]!)).error).toBeUndefined();
    const t = 1_700_000_000;
    await database.db.insertInto('resource_servers').values({ id: 'rs-old', issuer: 'https://auth.old.example', name: 'Old AS', enabled: 1, created_at: t, updated_at: t } as never).execute();

    const up = await migrator.migrateTo('0010b_authorization_details');
    expect(up.error).toBeUndefined();
    expect(up.results?.map((r) => r.migrationName)).toEqual(['0010_claim_release', '0010b_authorization_details']);
    const old = await database.db.selectFrom('resource_servers').select(['released_claims', 'aud_tenant', 'sub_id_format']).where('id', '=', 'rs-old').executeTakeFirstOrThrow();
    expect(old).toEqual({ released_claims: '["email"]', aud_tenant: null, sub_id_format: null });

    await database.db.insertInto('resource_servers').values({ id: 'rs-new', issuer: 'https://auth.new.example', name: 'New AS', enabled: 1, created_at: t, updated_at: t } as never).execute();
    expect((await database.db.selectFrom('resource_servers').select('released_claims').where('id', '=', 'rs-new').executeTakeFirstOrThrow()).released_claims).toBe('[]');

    expect((await migrator.migrateDown()).error).toBeUndefined();
    expect((await migrator.migrateDown()).error).toBeUndefined();
    expect((await database.db.selectFrom('resource_servers').selectAll().where('id', '=', 'rs-old').executeTakeFirstOrThrow())).not.toHaveProperty('released_claims');
  } finally {
    await database.close();
  }
});
