/** Stored times are epoch seconds (entities) or milliseconds (logs); the admin API and UI show ISO 8601. */
export const isoFromSeconds = (s: number): string => new Date(s * 1000).toISOString();

/** Optional document fields are omitted, not null: the document's zod schemas accept undefined only. */
export function present<T extends Record<string, unknown>>(value: T): { [K in keyof T]: Exclude<T[K], null> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null && v !== undefined)) as never;
}

/** A PATCH body: null clears an optional field, an absent key keeps it. */
export function merge(current: object, patch: object): Record<string, unknown> {
  const out: Record<string, unknown> = { ...current };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (v !== undefined) out[k] = v;
  }
  return out;
}
