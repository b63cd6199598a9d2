import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeJwt } from 'jose';
import type { Browser, Page } from 'playwright-core';
import { signIn } from './helpers/browser.ts';
import { launchChromium, locateChromium, watchProblems } from './helpers/chromium.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

/**
 * The admin UI in a real browser (chromium driven by playwright-core, see test/helpers/chromium.ts): an admin signs in through
 * idjag's own login page, opens the todo MCP server to the sales group with a rule, sees bob's token exchange
 * succeed in the audit log, disables the rule and sees the next one denied; a non-admin sees no admin page.
 * Screenshots of the main pages go to test-output/screenshots/ for a reviewer.
 */

const SHOTS = fileURLToPath(new URL('../test-output/screenshots/', import.meta.url));
const RULE = 'sales-todo-browser';
/** per test: a browser step waits up to playwright's 30 s, and a test takes a few of them */
const TIMEOUT = 60_000;
/** with no browser at all these are not run, and `npm test` says so in its summary (and fails in CI) */
const browserTest = 'missing' in locateChromium() ? test.skip : test;

let idjag: TestServer;
let browser: Browser;
let page: Page;
/** console errors and CSP violations seen by any page: each test ends with none */
const problems: string[] = [];

const watch = (p: Page): Page => watchProblems(p, problems);

const url = (path: string) => `${idjag.url}${path}`;
const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

async function signInAs(p: Page, username: string, password: string): Promise<void> {
  await p.goto(url('/admin'));
  await p.locator('#username').fill(username);
  await p.locator('#password').fill(password);
  await p.locator('button[type=submit]', { hasText: 'Sign in' }).click();
  await p.waitForLoadState();
}

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  idjag = await startTestServer();
  // one browser for the file (playwright gives it a fresh temporary profile); one context per person
  browser = await launchChromium();
  page = watch(await (await browser.newContext({ viewport: { width: 1366, height: 900 } })).newPage());
}, TIMEOUT);

afterAll(async () => {
  await browser?.close();
  await idjag?.dispose();
});

afterEach(() => {
  expect(problems.splice(0)).toEqual([]);
});

browserTest('an admin signs in through idjag\'s own login page and lands on the dashboard', async () => {
  await signInAs(page, 'admin', 'admin');
  expect(new URL(page.url()).pathname).toBe('/admin');
  await expect(page.locator('h1').textContent()).resolves.toBe('Dashboard');
  await expect(page.locator('nav[aria-label=Admin] a[aria-current=page]').textContent()).resolves.toBe('Dashboard');
  await expect(page.locator('.signout .who').textContent()).resolves.toBe('admin');
}, TIMEOUT);

browserTest('the admin creates a rule letting sales reach the todo MCP server; a bad lifetime is shown at its field first', async () => {
  await page.goto(url('/admin/rules/new'));
  await page.locator('#id').fill(RULE);
  await page.locator('#description').fill('sales may use the todo MCP server');
  await page.locator('#client_id').fill('demo-agent');
  await page.locator('#audience').selectOption(TODO_AS);
  await page.locator('#resource').selectOption(TODO_MCP);
  // the form's script shows the scopes the chosen MCP server defines, and only the chosen "who" box
  await expect(page.locator('#scope-hint').textContent()).resolves.toBe('This MCP server defines: todos.read todos.write');
  await page.locator('input[name=who][value=groups]').check();
  await expect(page.locator('#who_users').isVisible()).resolves.toBe(false);
  await page.locator('#who_groups').fill('sales');
  await page.locator('#scopes').fill('todos.read todos.write');
  await page.locator('#default_scopes').fill('todos.read todos.write');
  await page.locator('#rs_client_id').fill('sales-agent-at-todo');
  await page.locator('#lifetime').fill('7200');
  await page.locator('button[type=submit]', { hasText: 'Create rule' }).click();
  await page.waitForLoadState();
  await expect(page.locator('#lifetime-error').textContent()).resolves.toBe('at most 3600 s');
  await expect(page.locator('#who_groups').inputValue()).resolves.toBe('sales');

  await page.locator('#lifetime').fill('300');
  await page.locator('button[type=submit]', { hasText: 'Create rule' }).click();
  await page.waitForURL(url(`/admin/rules/${RULE}/edit`));
  await expect(page.locator('.flash').textContent()).resolves.toBe(`Rule ${RULE} created.`);

  await page.goto(url('/admin/rules'));
  const row = page.locator('tr', { hasText: RULE });
  await expect(row.locator('.rs-client-id').textContent()).resolves.toBe('sales-agent-at-todo');
  await expect(row.locator('.badge').textContent()).resolves.toBe('enabled');
  await shot('rules');
}, TIMEOUT);

browserTest('bob\'s token exchange is now allowed, and the audit log shows it with the rule that matched', async () => {
  const bob = await signIn(idjag.url, { username: 'bob', password: 'bob' });
  const res = await exchange(idjag.url, bob.tokens.id_token);
  expect(res.status).toBe(200);
  expect(decodeJwt(res.body.access_token)).toMatchObject({ aud: TODO_AS, client_id: 'sales-agent-at-todo', resource: TODO_MCP, scope: 'todos.read todos.write' });

  await page.goto(url('/admin/audit?user=bob'));
  const first = page.locator('table.audit tbody tr').first();
  await expect(first.locator('.badge').textContent()).resolves.toBe('issued');
  await first.locator('a').first().click();
  await page.waitForURL(/\/admin\/audit\/[0-9a-f-]{36}$/);
  await expect(page.locator('h3', { hasText: 'Rule that matched' }).count()).resolves.toBe(1);
  await expect(page.locator(`a[href="/admin/rules/${RULE}/edit"]`).count()).resolves.toBe(1);
  await expect(page.locator('tr.check.failed').count()).resolves.toBe(0);
  await expect(page.locator('tr.check.passed', { hasText: 'policy' }).count()).resolves.toBe(1);
  await shot('audit-detail');
}, TIMEOUT);

browserTest('disabling the rule (after a confirmation) makes the next exchange for bob fail', async () => {
  await page.goto(url('/admin/rules'));
  const row = page.locator('tr', { hasText: RULE });
  // Delete asks first (admin.js): dismissing deletes nothing
  page.once('dialog', (d) => void d.dismiss());
  await row.locator('button', { hasText: 'Delete' }).click();
  await expect(page.locator('tr', { hasText: RULE }).count()).resolves.toBe(1);

  await row.locator('button', { hasText: 'Disable' }).click();
  await page.waitForLoadState();
  await expect(page.locator('.flash').textContent()).resolves.toBe(`Rule ${RULE} disabled.`);
  await expect(page.locator('tr', { hasText: RULE }).locator('.badge').textContent()).resolves.toBe('disabled');

  const bob = await signIn(idjag.url, { username: 'bob', password: 'bob' });
  const res = await exchange(idjag.url, bob.tokens.id_token);
  expect(res.status).toBe(400);
  expect(res.body.error).toBe('invalid_target');

  await page.goto(url('/admin/audit?user=bob'));
  await expect(page.locator('table.audit tbody tr').first().locator('.badge').textContent()).resolves.toBe('denied');
}, TIMEOUT);

browserTest('the simulator explains the decision without issuing anything', async () => {
  await page.goto(url('/admin/simulate'));
  await page.locator('#client_id').fill('demo-agent');
  await page.locator('#user').fill('bob');
  await page.locator('#audience').selectOption(TODO_AS);
  await page.locator('#resource').selectOption(TODO_MCP);
  await page.locator('button[type=submit]', { hasText: 'Simulate' }).click();
  await page.waitForLoadState();
  await expect(page.locator('.result h2 .badge').textContent()).resolves.toBe('denied');
  await expect(page.locator('tr.check.failed code').first().textContent()).resolves.toBe('policy');
  await shot('simulator-denied');

  await page.locator('#user').fill('alice');
  await page.locator('#scope').fill('todos.read');
  await page.locator('button[type=submit]', { hasText: 'Simulate' }).click();
  await page.waitForLoadState();
  await expect(page.locator('.result h2 .badge').textContent()).resolves.toBe('issued');
  await expect(page.locator('.result .explanation').textContent()).resolves.toContain('engineering-todo');
  await shot('simulator');
}, TIMEOUT);

browserTest('the dashboard counts the configuration and charts the day\'s decisions', async () => {
  await page.goto(url('/admin'));
  await expect(page.locator('svg.chart rect.bar.issued').count()).resolves.toBe(24);
  const heights = await page.locator('svg.chart rect.bar').evaluateAll((rects) => rects.map((r) => Number((r as unknown as { getAttribute(n: string): string }).getAttribute('height'))));
  expect(heights.filter((h) => h > 0).length).toBeGreaterThanOrEqual(2);
  await expect(page.locator('.count', { hasText: 'policy rules' }).locator('small').textContent()).resolves.toBe('2 enabled');
  await shot('dashboard');
}, TIMEOUT);

browserTest('a user outside the admins group sees no admin page', async () => {
  const alice = watch(await (await browser.newContext()).newPage());
  try {
    await signInAs(alice, 'alice', 'alice');
    await expect(alice.locator('h1').textContent()).resolves.toBe('Not an administrator');
    await expect(alice.locator('nav[aria-label=Admin]').count()).resolves.toBe(0);
    for (const path of ['/admin/rules', '/admin/audit', '/admin/users']) {
      const res = await alice.goto(url(path));
      expect(res?.status()).toBe(403);
      await expect(alice.locator('h1').textContent()).resolves.toBe('Not an administrator');
      await expect(alice.locator('main').textContent()).resolves.not.toContain('sales');
    }
  } finally {
    await alice.context().close();
  }
}, TIMEOUT);
