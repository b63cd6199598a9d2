import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { signIn } from './helpers/browser.ts';
import { launchChromium, locateChromium, watchProblems } from './helpers/chromium.ts';
import { exchange, TODO_AS, TODO_MCP } from './helpers/exchange.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

/**
 * The effective-access page and the change-impact pages in a real browser (chromium driven by playwright-core, see
 * test/helpers/chromium.ts): an admin asks who can reach the todo MCP server, follows a user, previews an edit of
 * the rule that lets them in, then reviews the impact of disabling it before doing so. Screenshots go to
 * test-output/screenshots/ for a reviewer.
 */

const SHOTS = fileURLToPath(new URL('../test-output/screenshots/', import.meta.url));
const TIMEOUT = 60_000;
/** with no browser at all these are not run, and `npm test` says so in its summary (and fails in CI) */
const browserTest = 'missing' in locateChromium() ? test.skip : test;

let idjag: TestServer;
let browser: Browser;
let page: Page;
/** console errors and CSP violations seen by the page: each test ends with none */
const problems: string[] = [];

const url = (path: string) => `${idjag.url}${path}`;
const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  idjag = await startTestServer();
  // recorded traffic for the impact: alice issued three times (two through the rule under review), bob denied
  const alice = (await signIn(idjag.url, { username: 'alice', password: 'alice' })).tokens.id_token as string;
  const bob = (await signIn(idjag.url, { username: 'bob', password: 'bob' })).tokens.id_token as string;
  expect((await exchange(idjag.url, alice)).status).toBe(200);
  expect((await exchange(idjag.url, alice, { scope: 'todos.read' })).status).toBe(200);
  expect((await exchange(idjag.url, alice, { audience: `${idjag.issuer}/demo/as`, resource: `${idjag.issuer}/demo/mcp` })).status).toBe(200);
  expect((await exchange(idjag.url, bob)).status).toBe(400);

  browser = await launchChromium();
  page = watchProblems(await (await browser.newContext({ viewport: { width: 1366, height: 900 } })).newPage(), problems);
}, TIMEOUT);

afterAll(async () => {
  await browser?.close();
  await idjag?.dispose();
});

afterEach(() => {
  expect(problems.splice(0)).toEqual([]);
});

browserTest('effective access: who can reach the todo MCP server, then everything one of them can reach', async () => {
  await page.goto(url('/admin/access'));
  await page.locator('#username').fill('admin');
  await page.locator('#password').fill('admin');
  await page.locator('button[type=submit]', { hasText: 'Sign in' }).click();
  await page.waitForURL(url('/admin/access'));
  await expect(page.locator('nav[aria-label=Admin] a[aria-current=page]').textContent()).resolves.toBe('Access');

  // choosing the MCP server picks its Resource AS too (admin.js), and the page lists who can reach it
  await page.locator('select[name=resource]').selectOption(TODO_MCP);
  await expect(page.locator('select[name=audience]').inputValue()).resolves.toBe(TODO_AS);
  await page.locator('button[type=submit]', { hasText: 'Show' }).click();
  await page.waitForLoadState();
  const rows = page.locator('table.access tbody tr');
  await expect(rows.count()).resolves.toBe(1);
  await expect(rows.first().locator('td').first().textContent()).resolves.toBe('alice');
  await expect(rows.first().locator('td.scopes code.default').allTextContents()).resolves.toEqual(['todos.read', 'todos.write']);
  await expect(rows.first().locator('a[href="/admin/rules/engineering-todo/edit"]').count()).resolves.toBe(1);
  const csv = await page.locator('.exports a', { hasText: 'CSV' }).getAttribute('href');
  expect(csv).toBe(`/admin/access/export?${new URLSearchParams({ audience: TODO_AS, resource: TODO_MCP, format: 'csv' })}`);
  await shot('access-by-server');

  const download = await page.request.get(url(csv!));
  expect(download.status()).toBe(200);
  expect((await download.text()).split('\r\n')[1]).toMatch(/^alice,/);

  await rows.first().locator('a', { hasText: 'alice' }).click();
  await page.waitForURL(/\/admin\/access\?user=alice$/);
  await expect(page.locator('table.access tbody tr').count()).resolves.toBe(2);
  await expect(page.locator('table.access tbody tr td.uri code').allTextContents()).resolves.toEqual([`${idjag.issuer}/demo/mcp`, TODO_MCP].sort());
  await shot('access-by-user');
}, TIMEOUT);

browserTest('change impact: a narrower scope list previewed from the rule form, nothing saved', async () => {
  await page.goto(url('/admin/rules/engineering-todo/edit'));
  await page.locator('#scopes').fill('todos.read');
  await page.locator('#default_scopes').fill('todos.read');
  await page.locator('button', { hasText: 'Preview impact' }).click();
  await page.waitForLoadState();
  const panel = page.locator('section.impact');
  // alice's exchange with the default scopes loses todos.write; the one that asked for todos.read only is unchanged
  await expect(panel.locator('li.impact-narrowed strong').textContent()).resolves.toBe('1');
  await expect(panel.locator('li.impact-now_denied strong').textContent()).resolves.toBe('0');
  await expect(panel.locator('table.impact-examples tbody tr').count()).resolves.toBe(1);
  await expect(panel.locator('table.impact-examples tbody tr td').last().textContent()).resolves.toBe('issued todos.read');
  await expect(panel.locator('details.limits summary').textContent()).resolves.toBe('What a replay cannot know');
  // the form keeps what was typed; the rule is unchanged
  await expect(page.locator('#scopes').inputValue()).resolves.toBe('todos.read');
  await shot('impact-preview-edit');
  await page.goto(url('/admin/access?user=alice&resource=' + encodeURIComponent(TODO_MCP)));
  await expect(page.locator('table.access tbody tr td.scopes code').allTextContents()).resolves.toEqual(['todos.read', 'todos.write']);
}, TIMEOUT);

browserTest('change impact: disabling reviewed first (examples link to the audit log), then done, with the impact in the change log', async () => {
  await page.goto(url('/admin/rules/engineering-todo/edit'));
  await page.locator('a', { hasText: 'impact of disabling' }).click();
  await page.waitForURL(/\/admin\/rules\/engineering-todo\/impact\?action=disable$/);
  await expect(page.locator('h1').textContent()).resolves.toBe('Disable rule engineering-todo?');
  const panel = page.locator('section.impact');
  await expect(panel.locator('li.impact-now_denied strong').textContent()).resolves.toBe('2');
  await expect(panel.locator('table.impact-targets tbody tr').count()).resolves.toBe(1);
  await shot('impact-disable');

  // an example opens its audit entry
  await panel.locator('table.impact-examples tbody tr').first().locator('a').click();
  await page.waitForURL(/\/admin\/audit\/[0-9a-f-]{36}$/);
  await expect(page.locator('a[href="/admin/rules/engineering-todo/edit"]').count()).resolves.toBe(1);
  await page.goBack();

  await page.locator('button.confirm', { hasText: 'Disable rule engineering-todo' }).click();
  await page.waitForURL(url('/admin/rules/engineering-todo/edit'));
  await expect(page.locator('.flash').textContent()).resolves.toBe('Rule engineering-todo disabled.');
  await expect(page.locator('.impact-line').first().textContent()).resolves.toMatch(/^impact: \d+ decisions of the last 7 days replayed: 2 issued, would now be denied$/);

  await page.goto(url('/admin/access?resource=' + encodeURIComponent(TODO_MCP)));
  await expect(page.locator('.empty').textContent()).resolves.toBe('Nobody has access here.');
}, TIMEOUT);
