import type { DB } from '../db/index.ts';
import type { Actor, ChangeOptions } from './changes.ts';
import { previewImpact, type ImpactSettings, type ImpactSummary } from './impact.ts';
import { createRule, deleteRule, findRule, setRuleEnabled, updateRule, type RuleDoc, type RulePatch, type RuleView } from './rules.ts';

/**
 * A rule change as one value, so the API and the UI can preview it (its impact on recorded decisions, nothing
 * saved) and save it (with that impact in the change log) through the same path.
 */
export type RuleChange =
  | { action: 'create'; doc: RuleDoc }
  | { action: 'update'; id: string; patch: RulePatch }
  | { action: 'enable' | 'disable' | 'delete'; id: string };

export interface RuleChangeResult {
  /** the rule as the change leaves it (would leave it, for a preview); undefined after a delete */
  rule: RuleView | undefined;
  impact: ImpactSummary;
}

/** The clients whose decisions the change can touch: the rule's client before, and after. */
async function clientsOf(db: DB, change: RuleChange): Promise<string[]> {
  if (change.action === 'create') return [change.doc.client_id];
  const before = await findRule(db, change.id);
  const after = change.action === 'update' ? change.patch.client_id : undefined;
  return [...new Set([before?.client_id, after].filter((c): c is string => c !== undefined))];
}

export async function applyRuleChange(db: DB, change: RuleChange, by: Actor, opts: ChangeOptions = {}): Promise<RuleView | undefined> {
  switch (change.action) {
    case 'create': return createRule(db, change.doc, by, opts);
    case 'update': return updateRule(db, change.id, change.patch, by, opts);
    case 'enable':
    case 'disable': return setRuleEnabled(db, change.id, change.action === 'enable', by, opts);
    case 'delete': return deleteRule(db, change.id, by, opts).then(() => undefined);
  }
}

/** What the change would do, rehearsed and rolled back: every check a save makes, nothing stored. */
export async function previewRuleChange(db: DB, settings: ImpactSettings, change: RuleChange, by: Actor): Promise<RuleChangeResult> {
  const { result, impact } = await previewImpact(db, settings, await clientsOf(db, change), (opts) => applyRuleChange(db, change, by, opts));
  return { rule: result, impact };
}

/** The change saved, with its impact (computed first, over the state before it) recorded in the change log. */
export async function saveRuleChange(db: DB, settings: ImpactSettings, change: RuleChange, by: Actor): Promise<RuleChangeResult> {
  const { impact } = await previewRuleChange(db, settings, change, by);
  return { rule: await applyRuleChange(db, change, by, { impact }), impact };
}
