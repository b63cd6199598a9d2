/** Reads shared within one turn of the event loop (src/db/coalesce.ts): who shares, who reads again. */
import { coalesced } from '../../src/db/coalesce.ts';

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('asks for the same key within one turn share one read; another key reads apart', async () => {
  const reads: string[] = [];
  const read = coalesced(async (key: string) => (reads.push(key), `${key}@${reads.length}`));
  const answers = await Promise.all([read('a'), read('a'), read('b'), read('a')]);
  expect(reads).toEqual(['a', 'b']);
  expect(answers).toEqual(['a@1', 'a@1', 'b@2', 'a@1']);
});

test('an ask that comes once the read is sent gets a read of its own, made after it asked', async () => {
  let value = 'before';
  const sent: string[] = [];
  let release!: () => void;
  const read = coalesced(async (key: string) => {
    sent.push(key);
    const seen = value;
    await new Promise<void>((resolve) => { release = resolve; });
    return seen;
  });
  const first = read('a');
  await tick();
  expect(sent).toHaveLength(1);
  // a change commits, then a request arrives: it must not be answered by the read already under way
  value = 'after';
  const second = read('a');
  release();
  expect(await first).toBe('before');
  await tick();
  expect(sent).toHaveLength(2);
  release();
  expect(await second).toBe('after');
});

test('a read that fails fails every ask that shared it, and the next ask reads again', async () => {
  let fail = true;
  const read = coalesced(async () => {
    if (fail) throw new Error('database gone');
    return 'ok';
  });
  const both = [read('a'), read('a')];
  for (const p of both) await expect(p).rejects.toThrow('database gone');
  fail = false;
  await expect(read('a')).resolves.toBe('ok');
});
