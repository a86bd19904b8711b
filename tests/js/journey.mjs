// The console journey in a real headless Chromium, driven by tests/tests/console_browser.rs:
//
//   node tests/js/journey.mjs CONSOLE_URL OUT_DIR
//
// alice signs in through the identity provider and requests access to `shop`; bob signs in and
// approves it; alice collects the credential and copies the token with the Copy button. The
// script then waits for one line on stdin (the Rust test connects through the gateway with the
// token meanwhile), shows alice's sessions and signs her out.
//
// stdout carries only JSON lines, one per step: {"step": NAME, ...what the pages showed}. The
// Rust test asserts on them; this script only fails when the journey cannot go on (an element
// that never appears, a page that never loads). Then it prints {"step": "error", ...}, saves
// failure-PERSON.png in OUT_DIR and exits 1. Screenshots of every step go to OUT_DIR.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// Two shared cores: generous, but a step that hangs still fails well before the Rust timeout.
const STEP_TIMEOUT_MS = 30_000;
const REASON = 'INC-1234 investigate orders';
const COMMENT = 'OK for INC-1234, read only please';
const LIFETIME_LABEL = '2h';

const [consoleUrl, outDir] = process.argv.slice(2);
if (!consoleUrl || !outDir) {
  console.error('usage: node journey.mjs CONSOLE_URL OUT_DIR');
  process.exit(2);
}
const consoleOrigin = new URL(consoleUrl).origin;

function emit(step, facts = {}) {
  process.stdout.write(`${JSON.stringify({ step, ...facts })}\n`);
}

// Lines from the Rust test, read one at a time when a step waits for one.
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function nextStdinLine() {
  const { value, done } = await stdinLines.next();
  if (done) throw new Error('stdin closed while waiting for the test to say go on');
  return value.trim();
}

const isConsole = (url) => url.startsWith(`${consoleOrigin}/`) || url === consoleOrigin;

// What every console page showed: errors, CSP, inline code.
const findings = {
  consoleErrors: [],
  // The provider's dev pages are not ours: their blocked web font and inline code are expected.
  providerErrorCount: 0,
  documents: [],
  pages: [],
};
let probingCsp = false;

function recordError(person, page, kind, text) {
  if (probingCsp) return;
  if (isConsole(page.url())) {
    findings.consoleErrors.push({ person, url: page.url(), kind, text });
  } else {
    findings.providerErrorCount += 1;
  }
}

async function newPerson(browser, person) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  // Everything runs on loopback; the provider's dev pages would fetch a web font from the
  // internet, which this machine cannot reach (and a test must not depend on).
  await context.route('**/*', (route) => {
    const { hostname } = new URL(route.request().url());
    return hostname === '127.0.0.1' ? route.continue() : route.abort('blockedbyclient');
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: consoleOrigin });
  const page = await context.newPage();
  const who = { person, context, page, lastDocument: null };
  page.on('console', (msg) => {
    if (msg.type() === 'error') recordError(person, page, 'console', msg.text());
  });
  page.on('pageerror', (err) => recordError(person, page, 'pageerror', err.message));
  page.on('response', (response) => {
    const request = response.request();
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()
        && isConsole(response.url())) {
      const document = {
        person,
        url: response.url(),
        status: response.status(),
        csp: response.headers()['content-security-policy'] ?? null,
      };
      findings.documents.push(document);
      who.lastDocument = document;
    }
  });
  return who;
}

// The visible text of the first match, or null when nothing matches.
const text = async (locator) => ((await locator.count()) > 0
  ? (await locator.first().innerText()).trim()
  : null);

// Clicks a form's submit button and waits for the page it leads to, which must be a success
// at a URL `expected` accepts; otherwise fails with what the page said (an error page names
// the reason).
async function submit(who, button, expected) {
  const { page } = who;
  const navigated = page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame() });
  await button.click();
  await navigated;
  await page.waitForLoadState('load');
  const status = who.lastDocument?.status;
  if (status !== 200 || !expected(new URL(page.url()))) {
    const shown = ((await text(page.locator('main'))) ?? '').replace(/\s+/g, ' ');
    throw new Error(`${who.person}: the form led to ${page.url()} (HTTP ${status}): ${shown}`);
  }
}

async function screenshot(page, name) {
  await page.screenshot({ path: join(outDir, name), fullPage: true });
}

// Inline code and off-site references on the current console page.
async function inspectPage(who, label) {
  const facts = await who.page.evaluate(() => ({
    inlineScripts: document.querySelectorAll('script:not([src])').length,
    inlineStyles: document.querySelectorAll('style, [style]').length,
    offsite: [...document.querySelectorAll('[src], link[href]')]
      .map((el) => el.src || el.href)
      .filter((url) => new URL(url, document.baseURI).origin !== document.location.origin),
  }));
  findings.pages.push({ person: who.person, label, url: who.page.url(), ...facts });
}

// Goes through the provider's pages (login form, then consent) until the browser is back on
// the console.
async function signInAtProvider(who, login) {
  const { page } = who;
  await page.locator('a[href^="/auth/oidc/start"]').click();
  const providerUrls = [];
  for (let i = 0; i < 6 && !isConsole(page.url()); i += 1) {
    providerUrls.push(page.url());
    const loginField = page.locator('input[name="login"]');
    if (await loginField.count() > 0) {
      await loginField.fill(login);
      await page.locator('input[name="password"]').fill('any-password');
    }
    const before = page.url();
    await Promise.all([
      page.waitForURL((url) => url.href !== before),
      page.locator('form button[type="submit"]').first().click(),
    ]);
  }
  if (!isConsole(page.url())) {
    throw new Error(`${login} is still at the provider after ${providerUrls.length} pages: ${page.url()}`);
  }
  return providerUrls;
}

// Opens `path` signed out, which must lead to the sign-in page, and signs in from there.
async function signIn(who, path, loginScreenshot) {
  const { page } = who;
  await page.goto(`${consoleOrigin}${path}`);
  const loginUrl = page.url();
  if (loginScreenshot) {
    await inspectPage(who, 'login');
    await screenshot(page, loginScreenshot);
  }
  const providerUrls = await signInAtProvider(who, who.person);
  return {
    loginUrl,
    providerPages: providerUrls.length,
    landedOn: page.url(),
    navLogin: (await page.locator('.who .login').textContent())?.trim() ?? null,
  };
}

// The cells of the table row whose text contains `needle`, or null.
async function rowWith(page, needle) {
  const row = page.locator('tbody tr', { hasText: needle });
  if (await row.count() === 0) return null;
  const cells = await row.first().locator('td').allInnerTexts();
  const buttons = await row.first().locator('button').allInnerTexts();
  return { cells: cells.map((c) => c.trim()), buttons: buttons.map((b) => b.trim()) };
}

async function requestAccess(alice) {
  const { page } = alice;
  const card = page.locator('section.card.target', { has: page.locator('h2', { hasText: 'shop' }) });
  const form = card.locator('form.request').first();
  await form.locator('select[name="lifetime_secs"]').selectOption({ label: LIFETIME_LABEL });
  await form.locator('textarea[name="reason"]').fill(REASON);
  const button = (await form.locator('button[type="submit"]').innerText()).trim();
  await submit(alice, form.locator('button[type="submit"]'), (url) => url.pathname === '/requests');
  await inspectPage(alice, 'requests (pending)');
  await screenshot(page, '02-requests-pending-alice.png');
  return { button, url: page.url(), row: await rowWith(page, REASON) };
}

async function approve(bob) {
  const { page } = bob;
  const signedIn = await signIn(bob, '/approvals');
  await inspectPage(bob, 'approvals');
  await screenshot(page, '03-approvals-bob.png');
  const pending = await rowWith(page, REASON);
  const row = page.locator('tbody tr', { hasText: REASON }).first();
  await row.locator('input[name="comment"]').fill(COMMENT);
  await submit(bob, row.locator('button[value="approve"]'), (url) => url.pathname === '/approvals');
  await inspectPage(bob, 'approvals (decided)');
  await screenshot(page, '04-approvals-decided-bob.png');
  return {
    signedIn,
    pending,
    waitingEmpty: await text(page.locator('section.card', { hasText: 'Waiting' }).locator('.empty')),
    decided: await rowWith(page, COMMENT),
  };
}

async function collect(alice) {
  const { page } = alice;
  await page.reload();
  await inspectPage(alice, 'requests (approved)');
  await screenshot(page, '05-requests-approved-alice.png');
  const approved = await rowWith(page, REASON);
  const row = page.locator('tbody tr', { hasText: REASON }).first();
  await submit(
    alice,
    row.locator('button', { hasText: 'Get credential' }),
    (url) => /^\/requests\/[^/]+\/collect$/.test(url.pathname),
  );
  const heading = await text(page.locator('h1'));
  const notice = await text(page.locator('p.notice'));
  const token = await text(page.locator('#token'));
  const psql = await text(page.locator('#psql'));
  const uri = await text(page.locator('#uri'));
  const copy = page.locator('button.copy[data-copy="token"]');
  await page.bringToFront();
  await copy.click();
  // The button says so once the copy is done: only then is the clipboard worth reading.
  await page.waitForFunction(
    () => document.querySelector('button.copy[data-copy="token"]')?.textContent === 'Copied',
  );
  const clipboard = await page.evaluate(() => navigator.clipboard.readText());
  await inspectPage(alice, 'credential');
  await screenshot(page, '06-credential-alice.png');

  // The credential is shown once: the request now says issued and offers no second copy.
  await page.goto(`${consoleOrigin}/requests`);
  const afterCollect = await rowWith(page, REASON);
  return { approved, heading, notice, token, psql, uri, clipboard, afterCollect };
}

async function sessions(alice) {
  const { page } = alice;
  await page.goto(`${consoleOrigin}/sessions`);
  await inspectPage(alice, 'sessions');
  await screenshot(page, '07-sessions-alice.png');
  const header = await page.locator('thead th').allTextContents();
  const rows = [];
  for (const row of await page.locator('tbody tr').all()) {
    rows.push({
      id: await row.getAttribute('data-session'),
      cells: (await row.locator('td').allInnerTexts()).map((c) => c.trim()),
    });
  }
  return { url: page.url(), header: header.map((h) => h.trim()), rows };
}

// Signing out ends the console session: the pages ask for a sign-in again.
async function signOut(who) {
  const { page } = who;
  await submit(who, page.locator('.who button[type="submit"]'), (url) => url.pathname === '/login');
  const afterSignOut = page.url();
  await page.goto(`${consoleOrigin}/requests`);
  return { afterSignOut, requestsLeadTo: page.url() };
}

// Proves the Content-Security-Policy is enforced, not only sent: a script element added to
// the page must not run, and the browser must report the violation.
async function probeCsp(who) {
  probingCsp = true;
  try {
    return await who.page.evaluate(() => new Promise((resolve) => {
      let violation = null;
      document.addEventListener('securitypolicyviolation', (e) => {
        violation = e.effectiveDirective;
      });
      const script = document.createElement('script');
      script.textContent = 'window.__inlineRan = true;';
      document.body.appendChild(script);
      setTimeout(() => resolve({ inlineRan: window.__inlineRan === true, violation }), 500);
    }));
  } finally {
    probingCsp = false;
  }
}

// dave (admin) opens the admin pages and carol (auditor) the audit log: what they show, and a
// screenshot of each.
async function adminPages(browser, people) {
  const dave = await newPerson(browser, 'dave');
  people.push(dave);
  await signIn(dave, '/admin/targets');
  const pages = {};
  for (const [path, shot] of [
    ['/admin/targets', '08-admin-targets-dave.png'],
    ['/admin/grants', '09-admin-grants-dave.png'],
    ['/admin/people', '10-admin-people-dave.png'],
    ['/audit', '11-audit-dave.png'],
  ]) {
    await dave.page.goto(`${consoleOrigin}${path}`);
    await inspectPage(dave, path);
    await screenshot(dave.page, shot);
    pages[path] = {
      heading: await text(dave.page.locator('h1')),
      rows: await dave.page.locator('tbody tr').allInnerTexts(),
    };
  }
  const carol = await newPerson(browser, 'carol');
  people.push(carol);
  await signIn(carol, '/audit');
  await inspectPage(carol, 'audit (auditor)');
  await screenshot(carol.page, '12-audit-carol.png');
  const carolAudit = await carol.page.locator('tbody tr').allInnerTexts();
  // A request with her cookies rather than a navigation: the refused page would count as a
  // console error of the journey.
  const refused = await carol.page.request.get(`${consoleOrigin}/admin/targets`, { maxRedirects: 0 });
  const carolAdmin = { status: refused.status(), title: (await refused.text()).match(/<h1>([^<]*)<\/h1>/)?.[1] };
  return { pages, carolAudit, carolAdmin };
}

async function main() {
  mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const people = [];
  try {
    const alice = await newPerson(browser, 'alice');
    people.push(alice);
    const signedIn = await signIn(alice, '/', '00-login.png');
    await inspectPage(alice, 'home');
    await screenshot(alice.page, '01-home-alice.png');
    emit('signin', {
      ...signedIn,
      heading: await text(alice.page.locator('h1')),
      targets: await alice.page.locator('section.card.target h2').allInnerTexts(),
    });

    emit('requested', await requestAccess(alice));

    const bob = await newPerson(browser, 'bob');
    people.push(bob);
    emit('approved', await approve(bob));

    emit('credential', await collect(alice));

    const go = await nextStdinLine();
    if (go !== 'sessions') throw new Error(`expected "sessions" on stdin, got ${JSON.stringify(go)}`);
    emit('sessions', await sessions(alice));

    const cspProbe = await probeCsp(alice);
    emit('signout', await signOut(alice));

    emit('admin', await adminPages(browser, people));

    emit('checks', { ...findings, cspProbe });
  } catch (e) {
    for (const { person, page } of people) {
      await page.screenshot({ path: join(outDir, `failure-${person}.png`), fullPage: true })
        .catch(() => {});
    }
    emit('error', {
      message: e.message,
      urls: Object.fromEntries(people.map(({ person, page }) => [person, page.url()])),
      consoleErrors: findings.consoleErrors,
    });
    console.error(e.stack ?? e);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
  emit('done');
  // readline keeps stdin open; nothing else is left to do.
  process.exit(process.exitCode ?? 0);
}

main().catch((e) => {
  console.error(e.stack ?? e);
  process.exit(1);
});
