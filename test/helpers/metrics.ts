/** A Prometheus text-format scrape, parsed: every sample by name and labels. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseMetrics(text: string): Sample[] {
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((line) => {
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(LABEL)].map((l) => [l[1]!, l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))]));
    return { name: m[1]!, labels, value: Number(m[3]) };
  });
}

/** The samples of one metric whose labels include `where`. */
export const samples = (all: Sample[], name: string, where: Record<string, string> = {}) =>
  all.filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v));

/** The sum of those samples (0 when there is none). */
export const total = (all: Sample[], name: string, where: Record<string, string> = {}) =>
  samples(all, name, where).reduce((sum, s) => sum + s.value, 0);

export async function scrape(base: string, token?: string): Promise<Sample[]> {
  const res = await fetch(`${base}/metrics`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}: ${await res.text()}`);
  return parseMetrics(await res.text());
}
