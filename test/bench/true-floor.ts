/**
 * The true floor: the work a token exchange cannot avoid, written plainly, with no project code in it. Per
 * operation: verify an RS256 ID Token (jose), one indexed SELECT and one INSERT (better-sqlite3 prepared
 * statements on a WAL file with synchronous=NORMAL), sign an ES256 JWT (jose); `--concurrency` operations in
 * flight (jose's crypto runs on libuv's thread pool, so the floor uses every core it can). Anything the
 * exchange does beyond this (HTTP, client authentication, policy, audit detail, rate limiting) is what the
 * exchange's ratio to this floor measures.
 *
 * Prints one JSON line: { ops, seconds, opsPerSec, cpuSeconds, cpuUsPerOp }.
 *   node test/bench/true-floor.ts [--duration 5] [--warmup 2] [--concurrency 32]
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import SQLite from 'better-sqlite3';
import { exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';

const { values } = parseArgs({
  options: { duration: { type: 'string', default: '5' }, warmup: { type: 'string', default: '2' }, concurrency: { type: 'string', default: '32' } },
  strict: true,
});
const DURATION = Number(values.duration);
const WARMUP = Number(values.warmup);
const CONCURRENCY = Number(values.concurrency);

const ISSUER = 'http://localhost:3000';
const rsa = await generateKeyPair('RS256');
const ec = await generateKeyPair('ES256');
const kid = (await exportJWK(rsa.publicKey)).n!.slice(0, 16);
const now = () => Math.floor(Date.now() / 1000);
// An ID Token as the IdP issues it: the claims an exchange reads
const idToken = await new SignJWT({ email: 'alice@example.com', auth_time: now(), amr: ['pwd'], nonce: 'n' })
  .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).setIssuer(ISSUER).setSubject(randomUUID()).setAudience('demo-agent')
  .setIssuedAt().setExpirationTime('1h').sign(rsa.privateKey);

const dir = mkdtempSync(join(tmpdir(), 'idjag-true-floor-'));
const db = new SQLite(join(dir, 'floor.db'));
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec(`
  create table rules (id text primary key, client_id text not null, resource_server_id text not null, scopes text not null);
  create index rules_by_client_target on rules (client_id, resource_server_id);
  create table decisions (id text primary key, at integer not null, client_id text, sub text, audience text, jti text, decision text not null);
`);
const insertRule = db.prepare('insert into rules values (?, ?, ?, ?)');
for (let i = 0; i < 10; i++) insertRule.run(`rule-${i}`, i === 0 ? 'demo-agent' : `client-${i}`, 'rs-todo', '["todos.read","todos.write"]');
const selectRules = db.prepare('select id, scopes from rules where client_id = ? and resource_server_id = ?');
const insertDecision = db.prepare('insert into decisions values (?, ?, ?, ?, ?, ?, ?)');

async function once(): Promise<void> {
  const { payload } = await jwtVerify(idToken, rsa.publicKey, { issuer: ISSUER, audience: 'demo-agent', algorithms: ['RS256'] });
  const rule = selectRules.get('demo-agent', 'rs-todo') as { id: string; scopes: string } | undefined;
  if (!rule) throw new Error('no rule');
  const jti = randomBytes(18).toString('base64url');
  insertDecision.run(randomUUID(), Date.now(), 'demo-agent', payload.sub, 'https://auth.todo.example', jti, 'issued');
  await new SignJWT({ client_id: 'demo-agent-at-todo', scope: (JSON.parse(rule.scopes) as string[]).join(' '), resource: 'https://mcp.todo.example/mcp' })
    .setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: 'floor' })
    .setIssuer(ISSUER).setSubject(payload.sub!).setAudience('https://auth.todo.example').setJti(jti).setIssuedAt().setExpirationTime('5m')
    .sign(ec.privateKey);
}

/** `CONCURRENCY` loops, each starting its next operation when its last one ends, until `seconds` are up. */
async function run(seconds: number): Promise<{ ops: number; seconds: number; cpuSeconds: number }> {
  const end = performance.now() + seconds * 1000;
  const cpu = process.cpuUsage();
  const start = performance.now();
  let ops = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (performance.now() < end) {
      await once();
      ops++;
    }
  }));
  const used = process.cpuUsage(cpu);
  return { ops, seconds: (performance.now() - start) / 1000, cpuSeconds: (used.user + used.system) / 1e6 };
}

try {
  await run(WARMUP);
  const r = await run(DURATION);
  process.stdout.write(`${JSON.stringify({ ...r, opsPerSec: r.ops / r.seconds, cpuUsPerOp: (r.cpuSeconds * 1e6) / r.ops })}\n`);
} finally {
  db.close();
  rmSync(dir, { recursive: true, force: true });
}
