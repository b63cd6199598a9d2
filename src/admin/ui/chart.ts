/**
 * The dashboard's "issued vs denied, last 24 hours" chart as geometry: numbers in, rectangles and labels out.
 * The template only places these numbers in SVG attributes, so no text of the audit log reaches the markup.
 */

export interface HourCount {
  /** hours since the epoch */
  hour: number;
  issued: number;
  denied: number;
}

export interface Bar { x: number; y: number; width: number; height: number; kind: 'issued' | 'denied'; title: string }
export interface Label { x: number; y: number; text: string }
export interface GridLine { y: number; x1: number; x2: number; label: Label }

export interface Chart {
  width: number;
  height: number;
  bars: Bar[];
  hours: Label[];
  grid: GridLine[];
  issued: number;
  denied: number;
  /** for screen readers */
  summary: string;
}

const W = 720;
const H = 200;
const LEFT = 40;
const RIGHT = 8;
const TOP = 10;
const BOTTOM = 26;
const round = (n: number) => Math.round(n * 10) / 10;

/** The smallest of 1, 2, 5 × 10^k at or above n (and at least 4), so the scale reads in round numbers. */
export function niceMax(n: number): number {
  const target = Math.max(n, 4);
  const pow = 10 ** Math.floor(Math.log10(target));
  return [1, 2, 5, 10].map((m) => m * pow).find((v) => v >= target)!;
}

const hh = (hour: number) => `${String(new Date(hour * 3600_000).getUTCHours()).padStart(2, '0')}:00`;

/** 24 hourly slots ending with `lastHour` (hours since the epoch); hours without decisions count zero. */
export function decisionChart(counts: HourCount[], lastHour: number): Chart {
  const slots = Array.from({ length: 24 }, (_, i) => {
    const hour = lastHour - 23 + i;
    const c = counts.find((x) => x.hour === hour);
    return { hour, issued: c?.issued ?? 0, denied: c?.denied ?? 0 };
  });
  const max = niceMax(Math.max(...slots.map((s) => Math.max(s.issued, s.denied))));
  const plotH = H - TOP - BOTTOM;
  const slotW = (W - LEFT - RIGHT) / slots.length;
  const barW = slotW * 0.38;
  const base = H - BOTTOM;
  const bars = slots.flatMap((s, i) => (['issued', 'denied'] as const).map((kind, k) => {
    const n = s[kind];
    const height = (n / max) * plotH;
    return {
      x: round(LEFT + i * slotW + slotW * 0.1 + k * barW), y: round(base - height), width: round(barW), height: round(height), kind,
      title: `${hh(s.hour)}–${hh(s.hour + 1)} UTC: ${n} ${kind}`,
    };
  }));
  const hours = slots.flatMap((s, i) => (i % 3 === 0 ? [{ x: round(LEFT + i * slotW + slotW / 2), y: H - 8, text: hh(s.hour) }] : []));
  const grid = [0, ...(Number.isInteger(max / 2) ? [max / 2] : []), max].map((v) => {
    const y = round(base - (v / max) * plotH);
    return { y, x1: LEFT, x2: W - RIGHT, label: { x: LEFT - 6, y: y + 4, text: String(v) } };
  });
  const issued = slots.reduce((a, s) => a + s.issued, 0);
  const denied = slots.reduce((a, s) => a + s.denied, 0);
  return { width: W, height: H, bars, hours, grid, issued, denied, summary: `Last 24 hours: ${issued} issued, ${denied} denied` };
}
