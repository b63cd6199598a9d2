import { mkdirSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { launchChromium, locateChromium, watchProblems } from './helpers/chromium.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

/**
 * The playground in a real browser (chromium through playwright-core): alice signs in on idjag's login page and
 * walks the four steps, with the page's script narrowing the catalog and copying a curl command; bob's exchange
 * is denied and the flow stops with the admin's reason and a link to the rule, which an admin can open. One
 * screenshot per step goes to test-output/screenshots/ (IDJAG_PLAYGROUND_SCREENSHOTS=docs/playground writes the
 * README's instead: `npm run screenshots:playground`).
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SHOTS = ((dir) => (isAbsolute(dir) ? dir : join(ROOT, dir)))(process.env.IDJAG_PLAYGROUND_SCREENSHOTS || 'test-output/screenshots');
const TIMEOUT = 60_000;

let idjag: TestServer;
let browser: Browser;
/** console errors and CSP violations seen by any page: each test ends with none */
const problems: string[] = [];

const watch = (p: Page): Page => watchProblems(p, problems);

async function newPage(): Promise<{ context: BrowserContext; page: Page }> {
  // a little smaller than life, so the README's screenshots stay small
  const context = await browser.newContext({ viewport: { width: 1180, height: 900 }, deviceScaleFactor: 0.7 });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: idjag.url });
  return { context, page: watch(await context.newPage()) };
}

/**
 * A step's panel as the README shows it: from its top, or from `from` inside it (its answer rather than its form),
 * at most `height` pixels of it.
 */
async function shot(page: Page, step: string, name: string, { from, height = 720 }: { from?: (panel: Locator) => Locator; height?: number } = {}) {
  // places on the whole page: a full-page clip is in page coordinates, getBoundingClientRect in the viewport's
  const place = (locator: Locator) => locator.evaluate((e) => {
    const r = e.getBoundingClientRect();
    const { scrollX, scrollY } = globalThis as unknown as { scrollX: number; scrollY: number };
    return { x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height };
  });
  const panelLocator = page.locator(`#${step}`);
  const panel = await place(panelLocator);
  const top = from ? (await place(from(panelLocator))).y - 12 : panel.y;
  const clip = { x: panel.x, y: top, width: panel.width, height: Math.min(panel.y + panel.height - top, height) };
  await page.screenshot({ path: join(SHOTS, `playground-${name}.png`), fullPage: true, clip });
}

async function signIn(page: Page, username: string) {
  await page.goto(`${idjag.url}/playground`);
  await page.locator('#sign-in').click();
  // idjag's own login page, every time (prompt=login)
  await page.locator('#username').fill(username);
  await page.locator('#password').fill(username);
  await page.locator('button[type=submit]', { hasText: 'Sign in' }).click();
  await page.waitForURL(`${idjag.url}/playground#step-1`);
}

/** with no browser at all these are not run, and `npm test` says so in its summary (and fails in CI) */
const browserTest = 'missing' in locateChromium() ? test.skip : test;

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  idjag = await startTestServer();
  browser = await launchChromium();
}, TIMEOUT);

afterAll(async () => {
  await browser?.close();
  await idjag?.dispose();
});

afterEach(() => {
  expect(problems.splice(0)).toEqual([]);
});

describe('alice walks the whole flow', () => {
  let page: Page;
  beforeAll(async () => {
    ({ page } = await newPage());
  }, TIMEOUT);

  browserTest('1 · she signs in on idjag\'s login page; the ID Token is shown decoded and verified', async () => {
    await signIn(page, 'alice');
    await expect(page.locator('[data-signed-in-as]').textContent()).resolves.toBe('alice');
    await expect(page.locator('#step-1 tr.check.passed').count()).resolves.toBe(6);
    await expect(page.locator('#step-1 tr.check.failed').count()).resolves.toBe(0);
    await expect(page.locator('#step-1 [data-jwt="ID Token"] .jwt-claims').textContent()).resolves.toContain('"email": "alice@example.com"');
    await shot(page, 'step-1', '1-sign-in', { from: (p) => p.locator('[data-jwt]'), height: 600 });
  }, TIMEOUT);

  browserTest('2 · the catalog follows the chosen Resource AS; the exchange shows the request, the decision and the ID-JAG', async () => {
    const form = page.locator('form.exchange-form');
    const demoMcp = `${idjag.issuer}/demo/mcp`;
    // the other Resource AS: its MCP servers only, and no scope of the demo server left checked
    await form.locator('#audience').selectOption('https://auth.todo.example');
    await expect(form.locator('#resource').inputValue()).resolves.toBe('');
    await expect(form.locator(`#resource option[value="${demoMcp}"]`).evaluate((o) => (o as unknown as { hidden: boolean }).hidden)).resolves.toBe(true);
    await expect(form.locator('input[name=scope]:checked').count()).resolves.toBe(0);
    // back to the demo AS and its MCP server: its two scopes, checked
    await form.locator('#audience').selectOption(`${idjag.issuer}/demo/as`);
    await form.locator('#resource').selectOption(demoMcp);
    await expect(form.locator('label[data-resource]:visible').count()).resolves.toBe(2);
    await expect(form.locator('input[name=scope]:checked').count()).resolves.toBe(2);

    await page.locator('#exchange').click();
    await page.waitForURL(`${idjag.url}/playground#step-2`);
    const step = page.locator('#step-2');
    await expect(step.locator('[data-decision]').getAttribute('data-decision')).resolves.toBe('issued');
    await expect(step.locator('a.rule-link').first().getAttribute('href')).resolves.toBe('/admin/rules/engineering-demo-todo/edit');
    await expect(step.locator('tr.check.failed').count()).resolves.toBe(0);
    await expect(step.locator('[data-jwt="ID-JAG"] .jwt-claims').textContent()).resolves.toContain('"client_id": "demo-agent-at-todo"');
    await expect(step.locator('[data-request] table.kv').first().textContent()).resolves.toContain('Basic base64(demo-agent:***)');
    await shot(page, 'step-2', '2-exchange', { from: (p) => p.locator('[data-request]'), height: 740 });
  }, TIMEOUT);

  browserTest('copy as curl puts the exchange on the clipboard, its client secret as a variable', async () => {
    await page.locator('#step-2 details.curl button.copy').click();
    await page.locator('#step-2 details.curl button.copy', { hasText: 'Copied' }).waitFor();
    const copied = await page.evaluate(() => (navigator as unknown as { clipboard: { readText(): Promise<string> } }).clipboard.readText());
    expect(copied).toContain(`curl -sS -X POST '${idjag.url}/token'`);
    expect(copied).toContain('-u "demo-agent:${DEMO_AGENT_SECRET:?set DEMO_AGENT_SECRET to the client secret}"');
    expect(copied).toContain("--data-urlencode 'grant_type=urn:ietf:params:oauth:grant-type:token-exchange'");
    expect(copied).not.toContain('demo-agent-secret');
  }, TIMEOUT);

  browserTest('3 · the ID-JAG at the demo AS: its metadata, the JWT-bearer grant, the access token', async () => {
    await page.locator('#present').click();
    await page.waitForURL(`${idjag.url}/playground#step-3`);
    const step = page.locator('#step-3');
    await expect(step.locator('[data-request]').count()).resolves.toBe(2);
    await expect(step.locator('[data-status]').evaluateAll((s) => s.map((e) => e.getAttribute('data-status')))).resolves.toEqual(['200', '200']);
    await expect(step.locator('[data-jwt="Access token"] .jwt-header').textContent()).resolves.toContain('"typ": "at+jwt"');
    await shot(page, 'step-3', '3-present', { from: (p) => p.locator('[data-request]').nth(1), height: 640 });
  }, TIMEOUT);

  browserTest('4 · the MCP server\'s tools, called with the access token', async () => {
    const add = page.locator('form[data-tool="add_todo"]');
    await add.locator('input[name="arg[text]"]').fill('Try the playground');
    await add.locator('button').click();
    await page.waitForURL(`${idjag.url}/playground#step-4`);
    await expect(page.locator('[data-call="add_todo"] .tool-result').textContent()).resolves.toMatch(/^Added "Try the playground" to the todo list of alice@example\.com/);
    await page.locator('form[data-tool="list_todos"] button').click();
    await page.waitForLoadState();
    await expect(page.locator('[data-call="list_todos"] .tool-result').first().textContent()).resolves.toContain('Try the playground');
    await shot(page, 'step-4', '4-tools', { from: (p) => p.locator('.tools'), height: 600 });
  }, TIMEOUT);
});

browserTest('bob\'s exchange is denied: the flow stops with the admin\'s reason and the rule, which an admin opens', async () => {
  const { context, page } = await newPage();
  await signIn(page, 'bob');
  await page.locator('#exchange').click();
  await page.waitForURL(`${idjag.url}/playground#step-2`);
  const stop = page.locator('#step-2 .stop');
  await expect(stop.textContent()).resolves.toMatch(/The flow stops here\. idjag refused the exchange: invalid_target: [\s\S]*The reason an admin sees: rules engineering-demo-todo for client demo-agent/);
  await expect(page.locator('#step-2 tr.check.failed').getAttribute('data-check')).resolves.toBe('policy');
  await expect(page.locator('#present').count()).resolves.toBe(0);
  await expect(page.locator('#step-3 .not-reached').textContent()).resolves.toBe('Not reached: step 2 must issue an ID-JAG first.');
  const href = await stop.locator('a.rule-link').getAttribute('href');
  expect(href).toBe('/admin/rules/engineering-demo-todo/edit');
  await shot(page, 'step-2', '2-denied', { from: (p) => p.locator('[data-request]'), height: 660 });
  await context.close();

  // the link is the admin UI's page of that rule
  const admin = await newPage();
  await admin.page.goto(`${idjag.url}${href}`);
  await admin.page.locator('#username').fill('admin');
  await admin.page.locator('#password').fill('admin');
  await admin.page.locator('button[type=submit]', { hasText: 'Sign in' }).click();
  await admin.page.waitForURL(`${idjag.url}${href}`);
  await expect(admin.page.locator('h1').textContent()).resolves.toBe('Rule engineering-demo-todo');
  await admin.context.close();
}, TIMEOUT);
