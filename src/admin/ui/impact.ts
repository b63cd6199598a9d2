import { IMPACT_KINDS, type ImpactKind, type ImpactSummary, type Replayed } from '../impact.ts';

/** An impact summary as the admin pages show it (views/partials/admin/impact.hbs). */

const LABELS: Record<ImpactKind, string> = {
  now_denied: 'issued, would now be denied',
  now_issued: 'denied, would now be issued',
  narrowed: 'issued with fewer scopes',
  widened: 'issued with more scopes',
  reshaped: 'issued with other scopes',
};

const outcome = (r: Replayed) => (r.decision === 'issued' ? `issued ${r.scopes.join(' ')}` : `denied (${r.reason})`);

export function impactView(impact: ImpactSummary | null | undefined) {
  if (!impact) return undefined;
  const changed = IMPACT_KINDS.reduce((n, k) => n + impact.counts[k], 0);
  return {
    ...impact,
    changed,
    kinds: IMPACT_KINDS.map((kind) => ({ kind, label: LABELS[kind], n: impact.counts[kind] })),
    targets: impact.by_target.map((t) => ({
      ...t,
      cells: IMPACT_KINDS.map((k) => t[k]),
    })),
    kindHeads: IMPACT_KINDS.map((k) => LABELS[k]),
    examples: impact.examples.map((e) => ({ ...e, label: LABELS[e.kind], before_text: outcome(e.before), after_text: outcome(e.after) })),
  };
}

/** One line for a flash message or a change list. */
export function impactLine(impact: ImpactSummary): string {
  const parts = IMPACT_KINDS.filter((k) => impact.counts[k] > 0).map((k) => `${impact.counts[k]} ${LABELS[k]}`);
  return `${impact.replayed} decisions of the last ${impact.window.days} days replayed${impact.capped ? ' (cap reached)' : ''}: ${parts.length ? parts.join(', ') : 'no change'}`;
}
