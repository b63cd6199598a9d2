/**
 * Summarises a V8 CPU profile (from `npm run bench -- --profile`): self time by function and by package,
 * and inclusive time of the functions whose name matches --match.
 *
 *   node test/bench/profile.ts test-output/profiles/server-*.cpuprofile [--top 30] [--match name,name]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface Node { id: number; callFrame: CallFrame; children?: number[] }
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

const { values, positionals } = parseArgs({
  options: { top: { type: 'string', default: '30' }, match: { type: 'string', default: '' } },
  allowPositionals: true,
});
const file = positionals[0];
if (!file) {
  console.error('usage: profile.ts <file.cpuprofile> [--top n] [--match fn1,fn2]');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const self = new Map<number, number>();
profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
const total = [...self.values()].reduce((a, b) => a + b, 0);
const idle = [...self.entries()].filter(([id]) => ['(idle)', '(program)'].includes(byId.get(id)!.callFrame.functionName)).reduce((a, [, t]) => a + t, 0);

const short = (url: string) => url.replace(/^file:\/\//, '').replace(/^.*\/node_modules\//, 'nm:').replace(/^.*\/work\/main\//, '');
const pkg = (url: string) => {
  if (!url) return '(native/vm)';
  if (url.startsWith('node:')) return url.split('/').slice(0, 2).join('/');
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1]!;
  return short(url).split('/').slice(0, 2).join('/');
};
const key = (f: CallFrame) => `${f.functionName || '(anonymous)'} ${short(f.url)}:${f.lineNumber + 1}`;

const ms = (us: number) => `${(us / 1000).toFixed(0)} ms`;
const pct = (us: number, of = total - idle) => `${((us / of) * 100).toFixed(1)}%`;
console.log(`${file}: ${ms(total)} sampled, ${ms(total - idle)} busy (${pct(total - idle, total)})`);

const sum = (f: (n: Node) => string) => {
  const m = new Map<string, number>();
  for (const [id, t] of self) {
    const n = byId.get(id)!;
    if (['(idle)', '(program)'].includes(n.callFrame.functionName)) continue;
    const k = f(n);
    m.set(k, (m.get(k) ?? 0) + t);
  }
  return [...m.entries()].sort((a, b) => b[1] - a[1]);
};
const top = Number(values.top);
console.log('\nself time by package (% of busy):');
for (const [k, t] of sum((n) => pkg(n.callFrame.url)).slice(0, top)) console.log(`  ${pct(t).padStart(6)}  ${k}`);
console.log('\nself time by function (% of busy):');
for (const [k, t] of sum((n) => key(n.callFrame)).slice(0, top)) console.log(`  ${pct(t).padStart(6)}  ${k}`);

if (values.match) {
  // inclusive time: every sample whose stack contains a frame of that name, counted once per sample
  console.log('\ninclusive time (% of busy):');
  for (const name of values.match.split(',')) {
    let t = 0;
    profile.samples.forEach((id, i) => {
      for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
        if (byId.get(cur)!.callFrame.functionName === name) {
          t += profile.timeDeltas[i] ?? 0;
          break;
        }
      }
    });
    console.log(`  ${pct(t).padStart(6)}  ${name}`);
  }
}
