import type { KoaContextWithOIDC } from 'oidc-provider';
import { recordOutcome, type DecisionRecord } from '../audit/index.ts';
import type { AuditDecision } from '../db/schema.ts';
import type { DB } from '../db/index.ts';
import { EXCHANGE_STAGES, type ExchangeStage } from './pipeline.ts';

/**
 * The token exchange's one port for measurements (src/metrics implements it). Two hook points, and only two:
 * the pipeline's stage port (each stage's time) and `auditDecision`, the one way a decision reaches the audit
 * log. Counting where the audit row is written keeps the counters and the log in agreement.
 */
export const OBSERVED_STAGES = [...EXCHANGE_STAGES, 'audit'] as const;
export type ObservedStage = ExchangeStage | 'audit';

export interface ObservedDecision {
  decision: AuditDecision;
  reason: string;
  /** a client the provider found in the clients table (never a client id the request merely named) */
  clientId: string | undefined;
  /** from the request's arrival at the token endpoint to its audit row written */
  seconds: number;
}

export interface ExchangeObserver {
  /** one stage of a token exchange took `seconds`, whether it passed or refused */
  observeStage(stage: ObservedStage, seconds: number): void;
  /** a decision's audit row was written */
  observeDecision(decision: ObservedDecision): void;
  /** an audit row could not be written (the exchange then answers that nothing was issued) */
  observeAuditFailure(): void;
}

/**
 * The exchange's stopwatch: `begin(stage)` ends the stage running (reporting its time) and starts the next;
 * `end()` ends the last one. A stage that refuses the request is timed like one that passes.
 */
export function stageClock(observer: ExchangeObserver | undefined) {
  let current: { stage: ObservedStage; started: number } | undefined;
  const end = () => {
    if (current && observer) observer.observeStage(current.stage, (performance.now() - current.started) / 1000);
    current = undefined;
  };
  return {
    begin(stage: ObservedStage) {
      end();
      if (observer) current = { stage, started: performance.now() };
    },
    end,
  };
}

/** Writes a decision's audit row, then reports it; a failed write is reported as such and rethrown. */
export async function auditDecision(
  deps: { db: DB; observe?: ExchangeObserver | undefined },
  record: DecisionRecord,
  clientId: string | undefined,
  started: number,
): Promise<void> {
  try {
    await recordOutcome(deps.db, record);
  } catch (err) {
    deps.observe?.observeAuditFailure();
    throw err;
  }
  deps.observe?.observeDecision({ decision: record.decision, reason: record.reason, clientId, seconds: (performance.now() - started) / 1000 });
}

/**
 * The client the provider looked up for this request, if any: only a registered client id (so a metric
 * labelled with it has at most one series per client), whether or not its authentication then succeeded.
 */
export const registeredClient = (oidc: KoaContextWithOIDC['oidc'] | undefined): string | undefined => oidc?.client?.clientId;
