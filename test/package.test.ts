import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { signIn } from './helpers/browser.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';

/**
 * The package as a user gets it: `npm pack` (which builds the JavaScript into dist/), the tarball installed with
 * npm into an empty folder, then
 * - `npx idjag` there, and the foundation flow against it: discovery, alice signed in through the login page,
 *   her ID Token exchanged for an ID-JAG that verifies with the published keys; `--seed FILE` with a seed of the
 *   user's own; a Node older than the one idjag needs refused with one line;
 * - the testing API (`import { startIdjag } from 'idjag/testing'`) in a jest test file of that folder, as the
 *   README shows it, run by jest; and its types, checked by tsc as a TypeScript user's project would.
 *
 * Installing needs the npm registry for the tarball's dependencies (--prefer-offline: the local npm cache,
 * filled by `npm ci`, answers almost all of it).
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const INSTALL_TIMEOUT = 300_000;
const TIMEOUT = 120_000;
const require = createRequire(import.meta.url);

/** `node` in the children is the Node running this suite (the devDependency), unless a test says otherwise. */
const PATH = [dirname(process.execPath), process.env.PATH].join(delimiter);
/** children of the test get neither jest's NODE_OPTIONS nor the suite's database settings */
const childEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  ...process.env, PATH, NODE_OPTIONS: '', IDJAG_TEST_DB: '', DATABASE: '', DATABASE_URL: '', ...extra,
});

function run(command: string, args: string[], cwd: string, env = childEnv()): { stdout: string; stderr: string; status: number | null } {
  const res = spawnSync(command, args, { cwd, env, encoding: 'utf8', timeout: INSTALL_TIMEOUT });
  if (res.error) throw res.error;
  return { stdout: res.stdout, stderr: res.stderr, status: res.status };
}

function mustRun(command: string, args: string[], cwd: string, env = childEnv()): string {
  const res = run(command, args, cwd, env);
  if (res.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${res.status}):\n${res.stdout}\n${res.stderr}`);
  return res.stdout;
}

let work: string;
/** the user's project: an empty folder with idjag installed from the tarball */
let project: string;
let tarball: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'idjag-package-'));
  const packed = JSON.parse(mustRun('npm', ['pack', '--json', '--pack-destination', work], ROOT)) as { filename: string; files: { path: string }[] }[];
  tarball = join(work, packed[0]!.filename);
  project = join(work, 'project');
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'a-client-authors-project', private: true, type: 'module' }, null, 2));
  mustRun('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel', 'error', tarball], project);
}, INSTALL_TIMEOUT);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the tarball holds the built JavaScript, the views and the seed, and no TypeScript source or test', () => {
  const files = mustRun('tar', ['-tzf', tarball], work).split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
  expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'dist/src/bin.js', 'dist/src/main.js', 'dist/src/testing/index.js',
    'dist/src/testing/index.d.ts', 'dist/migrations/index.js', 'dist/seed/index.js', 'seed/seed.json', 'views/layout.hbs', 'views/assets/idjag.css']));
  expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
  expect(files.filter((f) => f.startsWith('test/') || f.startsWith('src/'))).toEqual([]);
  // what runs it is the user's node: no devDependency (the node package, typescript, jest) is installed with it
  expect(existsSync(join(project, 'node_modules', 'node'))).toBe(false);
  expect(existsSync(join(project, 'node_modules', 'typescript'))).toBe(false);
});

interface Started { child: ChildProcess; issuer: string; output: string[] }

/** `npx idjag ...args` in the user's project, until its banner names where it runs. */
async function npxIdjag(args: string[]): Promise<Started> {
  const child = spawn('npx', ['--no-install', 'idjag', ...args], { cwd: project, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const output: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => output.push(l));
  const issuer = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      const m = /idjag is running at (\S+)/.exec(line);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`npx idjag exited early with ${code}:\n${output.join('\n')}`)));
  });
  return { child, issuer, output };
}

/** SIGTERM to npx and idjag (one process group); resolves when they are gone. */
async function stop(started: Started): Promise<void> {
  const exited = new Promise((resolve) => started.child.once('exit', resolve));
  if (started.child.exitCode === null) process.kill(-started.child.pid!, 'SIGTERM');
  await exited;
}

describe('npx idjag in the user\'s project', () => {
  let database: TestDatabase;
  beforeEach(async () => {
    database = await createTestDatabase('idjag-npx');
  });
  afterEach(async () => {
    await database.dispose();
  });

  test('starts the seeded IdP; discovery, sign-in and the exchange for an ID-JAG run against it', async () => {
    const idjag = await npxIdjag(['--port', '0', '--host', '127.0.0.1', '--log-level', 'warn', '--database', database.location]);
    try {
      expect(idjag.output.join('\n')).toContain('alice / alice');
      const discovery = await (await fetch(`${idjag.issuer}/.well-known/openid-configuration`)).json() as Record<string, unknown>;
      expect(discovery).toMatchObject({ issuer: idjag.issuer, token_endpoint: `${idjag.issuer}/token` });
      expect(discovery.grant_types_supported).toContain('urn:ietf:params:oauth:grant-type:token-exchange');

      const alice = await signIn(idjag.issuer, { username: 'alice', password: 'alice' });
      const res = await exchange(idjag.issuer, alice.tokens.id_token);
      expect(res.status).toBe(200);
      const { payload, protectedHeader } = await jwtVerify(res.body.access_token, createRemoteJWKSet(new URL(`${idjag.issuer}/jwks`)), { issuer: idjag.issuer, audience: TODO_AS });
      expect(protectedHeader.typ).toBe('oauth-id-jag+jwt');
      expect(payload).toMatchObject({ resource: TODO_MCP, client_id: 'demo-agent-at-todo', email: 'alice@example.com' });

      // the admin UI's views and assets come from the installed package
      expect((await fetch(`${idjag.issuer}/assets/idjag.css`)).status).toBe(200);
      expect(await (await fetch(`${idjag.issuer}/admin`, { redirect: 'manual' })).status).toBe(303);
    } finally {
      await stop(idjag);
    }
  }, TIMEOUT);

  test('--seed FILE seeds an empty database with the user\'s own document instead', async () => {
    const seed = join(work, 'own-seed.json');
    writeFileSync(seed, JSON.stringify({
      users: [{ username: 'carol', password: 'carol-password', email: 'carol@example.test' }],
      clients: [{ client_id: 'demo-agent', client_secret: 'demo-agent-secret', first_party: true, redirect_uris: ['http://127.0.0.1:8976/callback'], grant_types: ['authorization_code'], response_types: ['code'] }],
    }));
    const idjag = await npxIdjag(['--port', '0', '--host', '127.0.0.1', '--log-level', 'warn', '--no-demo', '--database', database.location, '--seed', seed]);
    try {
      expect(idjag.output.join('\n')).toContain(`seed        ${seed}`);
      expect(idjag.output.join('\n')).not.toContain('alice / alice');
      const carol = await signIn(idjag.issuer, { username: 'carol', password: 'carol-password' });
      expect(carol.tokens.id_token).toEqual(expect.any(String));
      await expect(signIn(idjag.issuer, { username: 'alice', password: 'alice' })).rejects.toThrow('login refused (401)');
    } finally {
      await stop(idjag);
    }
  }, TIMEOUT);
});

/** The system's node (the first on PATH that is not the devDependency), when it is older than idjag needs. */
function olderSystemNode(): { executable: string; version: string } | undefined {
  const path = (process.env.PATH ?? '').split(delimiter).filter((d) => !d.includes('node_modules') && d !== dirname(process.execPath));
  const found = spawnSync('sh', ['-c', 'command -v node'], { env: { PATH: path.join(delimiter) }, encoding: 'utf8' }).stdout.trim();
  if (!found) return undefined;
  const version = spawnSync(found, ['--version'], { encoding: 'utf8' }).stdout.trim().replace(/^v/, '');
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major < 22 || (major === 22 && minor < 14) ? { executable: found, version } : undefined;
}

const oldNode = olderSystemNode();
// this machine kind's system node is 20; where the system node is new enough there is nothing older to run
(oldNode ? test : test.skip)(`on the system's older Node (${oldNode?.version ?? 'none found'}) npx idjag stops at once, naming the version it needs`, () => {
  const path = [dirname(oldNode!.executable), ...(process.env.PATH ?? '').split(delimiter).filter((d) => !d.includes('node_modules') && d !== dirname(process.execPath))].join(delimiter);
  const res = run('npx', ['--no-install', 'idjag'], project, { ...childEnv(), PATH: path });
  expect(res.status).toBe(1);
  expect(res.stderr.trim()).toBe(`idjag needs Node.js 22.14.0 or newer; this is Node.js ${oldNode!.version} (${oldNode!.executable}). Install Node.js 22.14.0 or later and run it again.`);
  expect(existsSync(join(project, 'data'))).toBe(false);
});

describe('the testing API from the installed package', () => {
  test('a jest test file in the user\'s project starts idjag, signs alice in, exchanges, reads the audit log', () => {
    writeFileSync(join(project, 'jest.config.json'), JSON.stringify({ testEnvironment: 'node', transform: {} }));
    writeFileSync(join(project, 'idjag.test.js'), USER_TEST);
    const jest = require.resolve('jest/bin/jest');
    const res = run(process.execPath, [jest, '--rootDir', project, '--colors=false', '--ci'], project, childEnv({ NODE_OPTIONS: '--experimental-vm-modules --disable-warning=ExperimentalWarning' }));
    const output = `${res.stdout}\n${res.stderr}`;
    expect({ status: res.status, output }).toMatchObject({ status: 0 });
    expect(output).toMatch(/Tests: +3 passed, 3 total/);
  }, TIMEOUT);

  test('its types check in a TypeScript project, and a wrong option is a type error', () => {
    writeFileSync(join(project, 'typed.ts'), TYPED_USE);
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2024', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true, types: [] },
      files: ['typed.ts'],
    }));
    const tsc = require.resolve('typescript/bin/tsc');
    const ok = run(process.execPath, [tsc, '-p', project], project);
    expect(ok.stdout + ok.stderr).toBe('');
    expect(ok.status).toBe(0);

    writeFileSync(join(project, 'typed.ts'), `${TYPED_USE}\nawait startIdjag({ colour: 'blue' });\n`);
    const wrong = run(process.execPath, [tsc, '-p', project], project);
    expect(wrong.stdout).toContain("'colour' does not exist in type 'IdjagTestOptions'");
  }, TIMEOUT);
});

/** The README's example ("Testing your client with idjag"), as a user's test file. */
const USER_TEST = readmeExample();

function readmeExample(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const m = /<!-- testing-example -->\s*```js\n([\s\S]*?)```/.exec(readme);
  if (!m) throw new Error('README.md has no testing example (a ```js block after <!-- testing-example -->)');
  return m[1]!;
}

const TYPED_USE = `import { startIdjag, type IdjagTestServer, type SignedInTokens, type AuditEntry } from 'idjag/testing';
const idjag: IdjagTestServer = await startIdjag({ seed: { users: [{ username: 'carol', password: 'carol-password' }] }, database: ':memory:' });
const tokens: SignedInTokens = await idjag.signIn({ username: 'carol', clientId: 'demo-agent' });
const sub: string | undefined = tokens.claims.sub;
const refresh: string | undefined = tokens.refresh_token;
const rows: AuditEntry[] = await idjag.audit({ decision: 'denied', client_id: 'demo-agent' });
const decision: 'issued' | 'denied' | 'error' | undefined = rows[0]?.decision;
await idjag.close();
export { sub, refresh, decision };
`;
