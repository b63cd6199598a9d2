import type { Migration } from 'kysely/migration';
import * as m0001 from './0001_foundation.ts';
import * as m0002 from './0002_idjag.ts';
import * as m0003 from './0003_demo.ts';
import * as m0004 from './0004_demo_todos.ts';
import * as m0005 from './0005_admin.ts';
import * as m0006 from './0006_audit_warnings.ts';
import * as m0007 from './0007_rate_limits.ts';
import * as m0008 from './0008_audit_resources_index.ts';
import * as m0009 from './0009_dpop_replay.ts';
import * as m0010 from './0010_claim_release.ts';
import * as m0010b from './0010b_authorization_details.ts';
import * as m0011 from './0011_rule_time_bounds.ts';
import * as m0011b from './0011b_change_impact.ts';
import * as m0012 from './0012_audit_slim_indexes.ts';
import * as m0013 from './0013_audit_database.ts';
import * as m0014 from './0014_audit_values.ts';
import * as m0015 from './0015_change_counters.ts';

/**
 * Every migration, by name. Listed statically (not read from the folder at run time) so the same list
 * loads under Node's type stripping, under jest, and from any working directory.
 */
export const migrations: Record<string, Migration> = {
  '0001_foundation': m0001,
  '0002_idjag': m0002,
  '0003_demo': m0003,
  '0004_demo_todos': m0004,
  '0005_admin': m0005,
  '0006_audit_warnings': m0006,
  '0007_rate_limits': m0007,
  '0008_audit_resources_index': m0008,
  '0009_dpop_replay': m0009,
  '0010_claim_release': m0010,
  '0010b_authorization_details': m0010b,
  '0011_rule_time_bounds': m0011,
  '0011b_change_impact': m0011b,
  '0012_audit_slim_indexes': m0012,
  '0013_audit_database': m0013,
  '0014_audit_values': m0014,
  '0015_change_counters': m0015,
};
