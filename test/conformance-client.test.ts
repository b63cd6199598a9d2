// The demo client certified by the MCP project's own checks: the official conformance suite
// (`@modelcontextprotocol/conformance`, a devDependency) runs its client scenario auth/cross-app-access-complete-flow
// against `node src/demo/client-cli.ts --conformance`, exactly as its CLI does for any SDK: it starts a mock IdP,
// Resource AS and MCP server on loopback, runs `<command> <mcp server url>` with MCP_CONFORMANCE_CONTEXT set, and
// records a check for each thing the client got right or wrong (the token exchange, the JWT-bearer grant, the
// bearer token at the MCP server, discovery). Nothing leaves the machine.
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SUITE = join(ROOT, 'node_modules/@modelcontextprotocol/conformance/dist/index.js');
const CLIENT = join(ROOT, 'src/demo/client-cli.ts');
const SCENARIO = 'auth/cross-app-access-complete-flow';

/** The suite runs the command through a shell (it splits on spaces and joins again): quote each word. */
const sh = (word: string) => `'${word.replaceAll("'", "'\\''")}'`;

/** The environment of the suite and the client: no proxy (everything is on loopback), no jest-only Node options. */
function childEnv(): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(https?_proxy|all_proxy|no_proxy|node_use_env_proxy)$/i.test(k)));
  return { ...env, NODE_OPTIONS: '', NO_COLOR: '1' };
}

interface Check {
  id: string;
  name: string;
  description: string;
  status: 'SUCCESS' | 'FAILURE' | 'WARNING' | 'INFO' | 'SKIPPED';
}

interface SuiteRun {
  /** the suite's exit code: 0 only if no check failed and the client exited 0 */
  code: number | null;
  stderr: string;
  /** from the suite's output directory: checks.json, and what the client printed */
  checks: Check[];
  clientStdout: string;
  clientStderr: string;
}

function run(command: string, args: string[], env = childEnv()): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** `conformance client --command <client> --scenario auth/cross-app-access-complete-flow -o <dir>`, on this Node. */
async function runScenario(clientCommand: string): Promise<SuiteRun> {
  const out = await mkdtemp(join(tmpdir(), 'idjag-conformance-'));
  try {
    const suite = await run(process.execPath, [SUITE, 'client', '--command', clientCommand, '--scenario', SCENARIO, '--timeout', '60000', '-o', out]);
    const files = (await readdir(out, { recursive: true })).map(String);
    const checksFile = files.find((f) => f.endsWith('checks.json'));
    if (!checksFile) throw new Error(`the suite wrote no checks.json (exit ${suite.code}):\n${suite.stderr}`);
    const dir = join(out, checksFile, '..');
    return {
      code: suite.code,
      stderr: suite.stderr,
      checks: JSON.parse(await readFile(join(out, checksFile), 'utf8')) as Check[],
      clientStdout: await readFile(join(dir, 'stdout.txt'), 'utf8'),
      clientStderr: await readFile(join(dir, 'stderr.txt'), 'utf8'),
    };
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/** The suite's INFO entries are its request log (incoming-request, outgoing-auth-response...), not checks. */
const verdicts = (checks: Check[]) => checks.filter((c) => !(c.status === 'INFO' && /^(incoming|outgoing)-/.test(c.id)));
const summary = (checks: Check[]) => verdicts(checks).map((c) => `${c.id}: ${c.status} (${c.description})`).join('\n');

describe(`the official conformance scenario ${SCENARIO} against npm run demo:client -- --conformance`, () => {
  let result: SuiteRun;

  beforeAll(async () => {
    result = await runScenario(`${sh(process.execPath)} ${sh(CLIENT)} --conformance`);
  }, 120_000);

  test('every check is SUCCESS, the token exchange, the JWT-bearer grant and the bearer token among them', () => {
    const checks = verdicts(result.checks);
    expect(summary(result.checks)).not.toMatch(/: (FAILURE|WARNING|SKIPPED|INFO) /);
    for (const c of checks) expect(`${c.id}: ${c.status}`).toBe(`${c.id}: SUCCESS`);
    const ids = new Set(checks.map((c) => c.id));
    for (const id of ['prm-pathbased-requested', 'authorization-server-metadata', 'complete-flow-token-exchange', 'token-request', 'complete-flow-jwt-bearer', 'valid-bearer-token']) {
      expect([...ids]).toContain(id);
    }
    // initialize, notifications/initialized and tools/list, each with the access token
    expect(checks.filter((c) => c.id === 'valid-bearer-token').length).toBeGreaterThanOrEqual(3);
    expect(result.stderr).toMatch(/Passed: (\d+)\/\1, 0 failed, 0 warnings/);
    expect(result.stderr).toContain('OVERALL: PASSED');
    expect(result.code).toBe(0);
  });

  test('the client exits 0 and prints the tutorial trace of steps 2 to 4, tokens shortened, the secret hidden', () => {
    expect(result.clientStderr).toMatch(/conformance client: steps 2-4 passed against http:\/\/localhost:\d+\/mcp \(1 tool\(s\) listed/);
    const out = result.clientStdout;
    for (const heading of ['== Step 1 · Given by the conformance suite (MCP_CONFORMANCE_CONTEXT)', '[step 3 · where is the MCP server\'s AS? (RFC 9728)]',
      '[step 3 · Resource AS metadata (RFC 8414)]', '[step 2 · ID Token for an ID-JAG (RFC 8693 token exchange)]',
      '[step 3 · ID-JAG for an access token (RFC 7523 JWT-bearer)]', '[step 4 · MCP server]', '== Result of tools/list', '1 tool(s): test-tool']) {
      expect(out).toContain(heading);
    }
    expect(out).toContain('"typ":"oauth-id-jag+jwt"');
    expect(out).toContain('Authorization: Basic base64(conformance-test-xaa-client:***)');
    expect(out).not.toContain('conformance-test-xaa-secret');
    expect(out).not.toMatch(/eyJ[\w-]{20,}\.[\w-]+\.[\w-]+/); // no whole JWT
  });
});

// The same scenario against deliberately wrong clients: the demo client fed a tampered context. The suite must fail
// them, which shows the assertions above can fail, and the client must say where it stopped.
const TAMPER = {
  'the wrong client secret at the AS': 'context.client_secret = "not-the-secret";',
  'an ID Token whose subject was changed after signing': `
    const [h, p, s] = context.idp_id_token.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    context.idp_id_token = [h, Buffer.from(JSON.stringify({ ...claims, sub: 'mallory@example.com' })).toString('base64url'), s].join('.');`,
};

describe('deliberately wrong clients fail the scenario', () => {
  let dir: string;
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'idjag-wrong-client-')); });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  test.each(Object.entries(TAMPER))('%s', async (name, tamper) => {
    const wrapper = join(dir, `${name.replace(/\W+/g, '-')}.mts`);
    await writeFile(wrapper, [
      'const context = JSON.parse(process.env.MCP_CONFORMANCE_CONTEXT);',
      tamper,
      'process.env.MCP_CONFORMANCE_CONTEXT = JSON.stringify(context);',
      `await import(${JSON.stringify(pathToFileURL(CLIENT).href)});`,
    ].join('\n'));
    const result = await runScenario(`${sh(process.execPath)} ${sh(wrapper)} --conformance`);

    const failed = verdicts(result.checks).filter((c) => c.status !== 'SUCCESS');
    if (name.startsWith('the wrong client secret')) {
      expect(summary(result.checks)).toMatch(/complete-flow-token-exchange: SUCCESS/);
      // the SDK retries the whole authorization once after invalid_client: two refusals
      expect(failed.length).toBeGreaterThan(0);
      for (const c of failed) expect(`${c.id}: ${c.description}`).toMatch(/^complete-flow-jwt-bearer: Client authentication failed: invalid credentials/);
      expect(result.clientStderr).toMatch(/conformance client failed: step 3 failed: invalid_client: Invalid client credentials/);
    } else {
      expect(failed.map((c) => `${c.id}: ${c.description}`)).toEqual([
        expect.stringMatching(/^complete-flow-token-exchange: Token exchange failed: signature verification failed/),
        'complete-flow-jwt-bearer: Client did not perform JWT bearer grant exchange',
      ]);
      expect(result.clientStderr).toMatch(/conformance client failed: step 2 failed: .*invalid_grant/);
    }
    expect(verdicts(result.checks).some((c) => c.id === 'valid-bearer-token')).toBe(false);
    expect(result.stderr).toContain('OVERALL: FAILED');
    expect(result.code).toBe(1);
  }, 120_000);
});

test('--conformance without MCP_CONFORMANCE_CONTEXT, or without the MCP server URL, stops with a message', async () => {
  const { MCP_CONFORMANCE_CONTEXT: _, ...env } = childEnv();
  const noContext = await run(process.execPath, [CLIENT, '--conformance', 'http://localhost:9/mcp'], env);
  expect(noContext.code).toBe(1);
  expect(noContext.stderr).toMatch(/conformance mode needs MCP_CONFORMANCE_CONTEXT, .* it is not set/);

  const partial = await run(process.execPath, [CLIENT, '--conformance', 'http://localhost:9/mcp'],
    { ...env, MCP_CONFORMANCE_CONTEXT: JSON.stringify({ idp_issuer: 'http://localhost:9', client_id: 'c' }) });
  expect(partial.code).toBe(1);
  expect(partial.stderr).toMatch(/idp_token_endpoint, idp_id_token, idp_client_id, client_secret are missing/);

  const noUrl = await run(process.execPath, [CLIENT, '--conformance'], env);
  expect(noUrl.code).toBe(2);
  expect(noUrl.stderr).toMatch(/--conformance takes exactly one argument, the MCP server's URL/);
});
