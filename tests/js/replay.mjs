// The audit console's session pages in a real headless Chromium, driven by
// tests/tests/console_replay_browser.rs:
//
//   node tests/js/replay.mjs CONSOLE_URL OUT_DIR
//
// carol (auditor) signs in, then waits for one JSON line on stdin naming the recorded sessions
// ({"replay", "xss", "word", "xssWord", "payloads"}); she searches, opens a hit in the replay,
// drives the player (play at 16x, pause, seek, next error, next risky, protocol noise) and
// opens the session full of XSS payloads. Then, on the test's word each time, she watches a
// live session ({"live": ID}, "live-more", "live-close") and dave (admin) ends another one
// from its page ({"terminate": ID, "reason": ...}, then "terminated").
//
// stdout carries only JSON lines, one per step: {"step": NAME, ...what the pages showed}. The
// Rust test asserts on them; this script only fails when it cannot go on (an element that
// never appears, a page that never loads). Then it prints {"step": "error", ...}, saves
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
// The indexer runs every couple of seconds: a search may find nothing at first.
const SEARCH_TIMEOUT_MS = 30_000;

const [consoleUrl, outDir] = process.argv.slice(2);
if (!consoleUrl || !outDir) {
  console.error('usage: node replay.mjs CONSOLE_URL OUT_DIR');
  process.exit(2);
}
const consoleOrigin = new URL(consoleUrl).origin;

function emit(step, facts = {}) {
  process.stdout.write(`${JSON.stringify({ step, ...facts })}\n`);
}

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// The test's next word: a JSON object or a bare word (then {word}).
async function nextOrder(expected) {
  const { value, done } = await stdinLines.next();
  if (done) throw new Error(`stdin closed while waiting for ${expected}`);
  const line = value.trim();
  const order = line.startsWith('{') ? JSON.parse(line) : { word: line };
  if (!(expected in order) && order.word !== expected) {
    throw new Error(`expected ${expected} on stdin, got ${line}`);
  }
  return order;
}

const isConsole = (url) => url.startsWith(`${consoleOrigin}/`) || url === consoleOrigin;

// Everything the console pages said about themselves: errors, CSP headers, violations.
const findings = { consoleErrors: [], documents: [] };

async function newPerson(browser, person) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  // Everything runs on loopback; the provider's dev pages would fetch a web font from the
  // internet, which this machine cannot reach.
  await context.route('**/*', (route) => {
    const { hostname } = new URL(route.request().url());
    return hostname === '127.0.0.1' ? route.continue() : route.abort('blockedbyclient');
  });
  // Counted from the first script on: a violation before the player loads counts too.
  await context.addInitScript(() => {
    // Wholly on screen: inside the window and inside the transcript's scrolled box.
    window.__inView = (node) => {
      const box = node.getBoundingClientRect();
      const frame = document.getElementById('transcript').getBoundingClientRect();
      return box.top >= Math.max(0, frame.top) && box.bottom <= Math.min(window.innerHeight, frame.bottom);
    };
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations.push(`${e.effectiveDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  const page = await context.newPage();
  const record = (kind, text) => {
    if (isConsole(page.url())) findings.consoleErrors.push({ person, url: page.url(), kind, text });
  };
  page.on('console', (msg) => {
    if (msg.type() === 'error' || /Content.Security.Policy/i.test(msg.text())) record(`console.${msg.type()}`, msg.text());
  });
  page.on('pageerror', (err) => record('pageerror', err.message));
  page.on('response', (response) => {
    const request = response.request();
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()
        && isConsole(response.url())) {
      findings.documents.push({
        person,
        url: response.url(),
        status: response.status(),
        csp: response.headers()['content-security-policy'] ?? null,
      });
    }
  });
  return { person, context, page };
}

async function signIn({ page }, login) {
  await page.goto(`${consoleOrigin}/login`);
  await page.locator('a[href^="/auth/oidc/start"]').click();
  for (let i = 0; i < 6 && !isConsole(page.url()); i += 1) {
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
  if (!isConsole(page.url())) throw new Error(`${login} is still at the provider: ${page.url()}`);
  return {
    landedOn: page.url(),
    navLogin: (await page.locator('.who .login').textContent())?.trim() ?? null,
  };
}

async function screenshot(page, name, fullPage = false) {
  await page.screenshot({ path: join(outDir, name), fullPage });
}

const statementCount = (page) => page.locator('#transcript .entry.stmt').count();
const loadState = async (page) => (await page.locator('#load-state').textContent())?.trim() ?? '';
const position = async (page) => (await page.locator('#position').textContent())?.trim() ?? '';

// Opens a session page and waits until the player has loaded the recording (or, for a live
// session, caught up with it).
async function openSession(page, id, query = '') {
  await page.goto(`${consoleOrigin}/sessions/${id}${query}`);
  await page.waitForFunction(() => {
    const state = document.getElementById('load-state')?.textContent ?? '';
    return /^\d+ statements|^Live:/.test(state);
  });
}

// What the current entry of the player shows.
async function currentEntry(page) {
  return page.evaluate(() => {
    const all = document.querySelectorAll('#transcript .current');
    const entry = all[0];
    if (!entry) return { count: 0 };
    const texts = (selector) => [...entry.querySelectorAll(selector)].map((n) => n.textContent);
    return {
      count: all.length,
      classes: [...entry.classList],
      seq: entry.dataset.seq,
      sql: entry.querySelector('pre.sql')?.textContent ?? null,
      badges: texts('.meta .badge'),
      errorMain: texts('.error-msg .msg-main'),
      errorLine: texts('.error-msg .msg-line'),
      errorExtra: texts('.error-msg .msg-extra'),
      inView: window.__inView(entry),
    };
  });
}

// carol searches a word of a recorded statement and opens the hit in the replay.
async function search({ page }, word) {
  await page.goto(`${consoleOrigin}/sessions`);
  await page.locator('form.filters input[name="q"]').fill(word);
  await Promise.all([
    page.waitForURL((url) => url.searchParams.get('q') === word),
    page.locator('form.filters button[type="submit"]').click(),
  ]);
  const deadline = Date.now() + SEARCH_TIMEOUT_MS;
  while (await page.locator('table.hits tbody tr').count() === 0) {
    if (Date.now() > deadline) throw new Error(`no search hit for ${word} within ${SEARCH_TIMEOUT_MS} ms`);
    await page.waitForTimeout(500);
    await page.reload();
  }
  const searchUrl = page.url();
  await screenshot(page, '01-search-hit.png');
  const hits = await page.locator('table.hits tbody tr').evaluateAll((rows) => rows.map((row) => ({
    session: row.dataset.session,
    seq: row.dataset.seq,
    marks: [...row.querySelectorAll('mark')].map((m) => m.textContent),
    snippet: row.querySelector('.snippet code')?.textContent ?? null,
    links: [...row.querySelectorAll('a')].map((a) => ({ text: a.textContent.trim(), href: a.getAttribute('href') })),
  })));

  await Promise.all([
    page.waitForURL((url) => url.pathname.startsWith('/sessions/') && url.searchParams.has('seq')),
    page.locator('table.hits tbody tr').first().getByRole('link', { name: 'open in the replay' }).click(),
  ]);
  await page.waitForSelector('#transcript .entry.wanted');
  const opened = await page.evaluate(() => {
    const wanted = document.querySelector('#transcript .entry.wanted');
    const transcript = document.getElementById('transcript');
    return {
      url: location.pathname + location.search,
      classes: [...wanted.classList],
      seq: wanted.dataset.seq,
      sql: wanted.querySelector('pre.sql')?.textContent ?? null,
      wantedCount: document.querySelectorAll('#transcript .wanted').length,
      // Where it would be with nothing scrolled: below the first screen, it had to be
      // scrolled to (the window, the transcript or both).
      unscrolledTop: wanted.getBoundingClientRect().top + window.scrollY + transcript.scrollTop,
      scrolled: window.scrollY + transcript.scrollTop,
      inView: window.__inView(wanted),
      innerHeight: window.innerHeight,
    };
  });
  await screenshot(page, '02-hit-opened-in-replay.png');
  return { searchUrl, hits, opened };
}

// Statement reveal times while playing: installed before Play is clicked.
async function watchReveals(page) {
  await page.evaluate(() => {
    const transcript = document.getElementById('transcript');
    window.__reveals = [];
    window.__playClickedAt = null;
    document.addEventListener('click', (e) => {
      if (e.target.id === 'play' && window.__playClickedAt === null) window.__playClickedAt = performance.now();
    }, true);
    new MutationObserver(() => {
      window.__reveals.push({ t: performance.now(), n: transcript.querySelectorAll('.entry.stmt').length });
    }).observe(transcript, { childList: true });
  });
}

// What the reveals were, relative to the click: the statement counts in order (repeats
// dropped) and when each count was first reached.
async function reveals(page) {
  return page.evaluate(() => {
    const counts = [];
    const at = [];
    for (const { t, n } of window.__reveals) {
      if (counts[counts.length - 1] !== n) counts.push(n);
      if (n > 0 && at[n - 1] === undefined) at[n - 1] = Math.round((t - window.__playClickedAt) * 10) / 10;
    }
    return { counts, revealedAtMs: at };
  });
}

const playLabel = async (page) => (await page.locator('#play').textContent())?.trim();

// The player on a recorded session: what it shows first, then every control.
async function player({ page }, id) {
  await openSession(page, id);
  await screenshot(page, '03-replay-opened.png', true);
  const facts = { loaded: { loadState: await loadState(page), statements: await statementCount(page), position: await position(page) } };

  facts.resultTable = await page.locator('#transcript article.entry.stmt', { hasText: 'ORDER BY id' }).first().evaluate((n) => ({
    header: [...n.querySelectorAll('table.rows thead th')].map((th) => th.textContent),
    rows: [...n.querySelectorAll('table.rows tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
    rowCount: n.querySelector('.row-count')?.textContent ?? null,
    omitted: [...n.querySelectorAll('.omitted')].map((o) => o.textContent),
  }));
  const extended = page.locator('#transcript article.entry.stmt', { hasText: 'WHERE id = $1' }).first();
  facts.extended = await extended.evaluate((n) => ({
    params: [...n.querySelectorAll('table.params tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
    inlined: n.querySelector('details.inlined pre')?.textContent ?? null,
    rows: [...n.querySelectorAll('table.rows tbody tr')].map((tr) => tr.textContent),
  }));
  await extended.scrollIntoViewIfNeeded();
  await screenshot(page, '04-result-table-and-parameters.png');

  // The recording's own statement offsets, to check the pace against.
  const data = await (await page.request.get(`${consoleOrigin}/sessions/${id}/replay?seq=0&status=I`)).json();
  facts.offsetsMs = data.entries.filter((e) => e.kind === 'statement' && !e.noise).map((e) => e.offset_ms);

  // Play at 16x from the end: it starts over and reveals the statements one by one.
  await page.locator('#speed').selectOption('16');
  await watchReveals(page);
  await page.locator('#play').click();
  const labelWhilePlaying = await playLabel(page);
  await page.waitForFunction(() => document.getElementById('play').textContent.includes('Play'), null, { timeout: 20_000 });
  const endedAt = await statementCount(page);
  await page.waitForTimeout(1000);
  facts.play16 = {
    labelWhilePlaying,
    ...(await reveals(page)),
    statementsAtEnd: endedAt,
    statementsASecondLater: await statementCount(page),
    labelAfter: await playLabel(page),
    position: await position(page),
  };
  await screenshot(page, '05-played-16x.png');

  // Play at 1x and pause after the third statement: nothing more comes.
  await page.locator('#speed').selectOption('1');
  await page.locator('#play').click();
  await page.waitForFunction(() => document.querySelectorAll('#transcript .entry.stmt').length >= 3, null, { timeout: 20_000 });
  await page.locator('#play').click();
  const atPause = await statementCount(page);
  const positionAtPause = await position(page);
  await page.waitForTimeout(1500);
  facts.pause = {
    atPause,
    positionAtPause,
    labelAfterPause: await playLabel(page),
    aMomentLater: await statementCount(page),
  };
  await screenshot(page, '06-paused.png');

  // Seek: a click near the start of the timeline.
  const timeline = page.locator('#timeline');
  const box = await timeline.boundingBox();
  await timeline.click({ position: { x: box.width * 0.02, y: box.height / 2 } });
  facts.seek = { statements: await statementCount(page), position: await position(page) };
  await screenshot(page, '07-seek-near-start.png');

  await page.locator('#next-error').click();
  facts.nextError = { ...(await currentEntry(page)), position: await position(page) };
  await screenshot(page, '08-next-error.png');

  await page.locator('#next-risky').click();
  facts.nextRisky = { ...(await currentEntry(page)), position: await position(page) };
  await screenshot(page, '09-next-risky.png');

  // Protocol noise: the extended statement's Parse/Bind/Sync lines, shown only on request.
  const visibleProtocol = () => page.evaluate(() => [...document.querySelectorAll('#transcript .entry.event.protocol')]
    .filter((n) => getComputedStyle(n).display !== 'none')
    .map((n) => n.querySelector('.event-text')?.textContent ?? n.textContent));
  const inDocument = await page.locator('#transcript .entry.event.protocol').count();
  const hidden = await visibleProtocol();
  await page.locator('#show-noise').check();
  const shown = await visibleProtocol();
  await page.locator('#transcript .entry.event.protocol').first().scrollIntoViewIfNeeded();
  await screenshot(page, '10-protocol-noise-shown.png');
  await page.locator('#show-noise').uncheck();
  facts.noise = { inDocument, hidden, shown, hiddenAgain: await visibleProtocol() };
  return facts;
}

// Everything a payload could have done, on the page as it stands.
async function xssFacts(page, payloads) {
  return page.evaluate((payloads) => {
    const texts = (selector) => [...document.querySelectorAll(selector)].map((n) => n.textContent);
    const bodyText = document.body.innerText;
    return {
      pwned: window.__pwned === undefined ? null : String(window.__pwned),
      // Elements carrying an event handler attribute: none of ours has one.
      withHandlers: [...document.querySelectorAll('*')]
        .filter((n) => [...n.attributes].some((a) => a.name.toLowerCase().startsWith('on')))
        .map((n) => n.outerHTML.slice(0, 200)),
      injectedElements: [...document.querySelectorAll('img, svg, iframe, object, embed, script:not([src])')]
        .map((n) => n.outerHTML.slice(0, 200)),
      scripts: [...document.scripts].map((s) => s.getAttribute('src')),
      missingText: payloads.filter((p) => !bodyText.includes(p)),
      violations: window.__violations ?? null,
      columns: texts('#transcript table.rows th'),
      cells: texts('#transcript table.rows td'),
      params: texts('#transcript table.params td.pvalue'),
      inlined: texts('#transcript details.inlined pre'),
      errors: texts('#transcript .error-msg .msg-main'),
      errorExtras: texts('#transcript .error-msg .msg-extra'),
      notices: texts('#transcript .notice-msg .msg-main'),
      events: texts('#transcript .entry.event .event-text'),
      application: [...document.querySelectorAll('.facts div')]
        .find((d) => d.querySelector('dt')?.textContent === 'Application')?.querySelector('dd')?.textContent ?? null,
      snippets: texts('table.hits .snippet code'),
      marks: texts('table.hits mark'),
      listedApplications: texts('table tbody td.text'),
    };
  }, payloads);
}

// The session full of payloads, its search hit and its row in the session list.
async function xss({ page }, order) {
  await openSession(page, order.xss);
  // Protocol noise on too: every recorded string on the page at once.
  await page.locator('#show-noise').check();
  const sessionPage = { loadState: await loadState(page), ...(await xssFacts(page, order.payloads)) };
  await screenshot(page, '11-xss-session.png', true);
  // The transcript scrolls on its own: its end holds the error, the notice and the
  // notification.
  await page.locator('#transcript .entry.event.session_end').scrollIntoViewIfNeeded();
  await screenshot(page, '11b-xss-session-transcript-end.png');

  await page.goto(`${consoleOrigin}/sessions?q=${encodeURIComponent(order.xssWord)}`);
  const deadline = Date.now() + SEARCH_TIMEOUT_MS;
  while (await page.locator('table.hits tbody tr').count() === 0) {
    if (Date.now() > deadline) throw new Error(`no search hit for ${order.xssWord}`);
    await page.waitForTimeout(500);
    await page.reload();
  }
  const searchPage = await xssFacts(page, order.searchPayloads);
  await screenshot(page, '12-xss-search.png', true);

  await page.goto(`${consoleOrigin}/sessions`);
  const listPage = await xssFacts(page, order.listPayloads);
  await screenshot(page, '13-xss-session-list.png', true);
  return { sessionPage, searchPage, listPage };
}

// carol watches a live session; the test runs statements and ends it meanwhile.
// A session longer than the page holds: the player keeps a bounded window of entries and
// says what is off the page.
async function long({ page }) {
  const { long: id } = await nextOrder('long');
  await openSession(page, id);
  const facts = () => page.evaluate(() => {
    const entries = [...document.querySelectorAll('#transcript .entry')];
    const bars = [...document.querySelectorAll('#transcript .window-bar')]
      .filter((b) => !b.hidden).map((b) => b.textContent);
    return {
      onPage: entries.length,
      firstSeq: Number(entries[0]?.dataset.seq ?? -1),
      lastSeq: Number(entries[entries.length - 1]?.dataset.seq ?? -1),
      bars,
      position: document.getElementById('position').textContent,
      loadState: document.getElementById('load-state').textContent,
    };
  });
  const opened = await facts();
  await screenshot(page, '21-long-opened.png');
  // Seek to the very start, then jump to the one error near the end.
  const box = await page.locator('#timeline').boundingBox();
  await page.mouse.click(box.x + 2, box.y + box.height / 2);
  const atStart = await facts();
  await page.click('#next-error');
  const atError = { ...(await facts()), current: await currentEntry(page) };
  await screenshot(page, '22-long-next-error.png');
  await page.locator('#transcript .window-bar:not([hidden])').first().click();
  const earlier = await facts();
  emit('long', { opened, atStart, atError, earlier });
}

async function live({ page }) {
  const { live: id } = await nextOrder('live');
  await openSession(page, id);
  // A full reload would lose this.
  await page.evaluate(() => { window.__sameDocument = true; });
  await screenshot(page, '14-live-opened.png');
  emit('live-open', {
    badge: await page.locator('#live-badge').textContent(),
    loadState: await loadState(page),
    statements: await page.locator('#transcript .entry.stmt pre.sql').allTextContents(),
    terminateForm: await page.locator('#terminate-form').count(),
  });

  const { word: more } = await nextOrder('live-more');
  const asked = Date.now();
  await page.waitForFunction(() => document.getElementById('transcript').textContent.includes('live three'), null, { timeout: 20_000 });
  const appearedAfterMs = Date.now() - asked;
  await screenshot(page, '15-live-new-statements.png');
  emit(more, {
    appearedAfterMs,
    sameDocument: await page.evaluate(() => window.__sameDocument === true),
    statements: await page.locator('#transcript .entry.stmt pre.sql').allTextContents(),
  });

  const { word: close } = await nextOrder('live-close');
  await page.waitForFunction(() => document.getElementById('live-badge')?.textContent === 'ended', null, { timeout: 20_000 });
  await screenshot(page, '16-live-ended.png');
  emit(close, {
    badge: await page.locator('#live-badge').textContent(),
    loadState: await loadState(page),
    sameDocument: await page.evaluate(() => window.__sameDocument === true),
    events: await page.locator('#transcript .entry.event .event-text').allTextContents(),
  });
}

// dave ends a live session from its page with a reason.
async function terminate(browser, people) {
  const order = await nextOrder('terminate');
  const dave = await newPerson(browser, 'dave');
  people.push(dave);
  const { page } = dave;
  const signedIn = await signIn(dave, 'dave');
  await openSession(page, order.terminate);
  await page.locator('#terminate-form input[name="reason"]').fill(order.reason);
  await screenshot(page, '17-terminate-form.png');
  await Promise.all([
    page.waitForURL((url) => url.searchParams.get('terminating') === '1'),
    page.locator('#terminate-form button[type="submit"]').click(),
  ]);
  await page.waitForFunction(() => /^\d+ statements|^Live:/.test(document.getElementById('load-state')?.textContent ?? ''));
  await page.evaluate(() => { window.__sameDocument = true; });
  await screenshot(page, '18-terminate-requested.png');
  emit('terminate-asked', {
    signedIn,
    url: page.url(),
    alert: (await page.locator('#termination').count()) > 0 ? (await page.locator('#termination').textContent()).trim() : null,
    formAfter: await page.locator('#terminate-form').count(),
  });

  const { word: ended } = await nextOrder('terminated');
  // The page follows the session live: the end arrives without a reload.
  await page.waitForFunction(() => document.getElementById('live-badge')?.textContent === 'ended', null, { timeout: 20_000 });
  const badge = await page.locator('#live-badge').textContent();
  const events = await page.locator('#transcript .entry.event .event-text').allTextContents();
  const sameDocument = await page.evaluate(() => window.__sameDocument === true);
  await screenshot(page, '19-terminated-live-view.png');
  await page.reload();
  await page.waitForFunction(() => /^\d+ statements/.test(document.getElementById('load-state')?.textContent ?? ''));
  await screenshot(page, '20-terminated-reloaded.png', true);
  emit(ended, {
    badge,
    events,
    sameDocument,
    reloaded: {
      heading: (await page.locator('h1').textContent()).replace(/\s+/g, ' ').trim(),
      end: await page.locator('.facts div', { hasText: 'End' }).locator('dd').allTextContents(),
      terminateForm: await page.locator('#terminate-form').count(),
    },
  });
}

async function main() {
  mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const people = [];
  try {
    const carol = await newPerson(browser, 'carol');
    people.push(carol);
    emit('signin', await signIn(carol, 'carol'));

    const order = await nextOrder('replay');
    emit('search', await search(carol, order.word));
    emit('player', await player(carol, order.replay));
    emit('xss', await xss(carol, order));
    await long(carol);
    await live(carol);
    await terminate(browser, people);

    const violations = [];
    for (const { person, page } of people) {
      violations.push(...(await page.evaluate(() => window.__violations ?? [])).map((v) => `${person}: ${v}`));
    }
    emit('checks', { ...findings, violations });
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
