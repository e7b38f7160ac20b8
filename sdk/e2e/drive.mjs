// Drives a real headless Chromium through the test site, for the engine's
// browser tests (tests/browser.rs) and the SDK cost measurement
// (scripts/bench-sdk). The site is served here, on `localhost` and a port of
// its own: another origin than the engine's, as on a real web site.
//
//   node drive.mjs SCENARIO
//   env: ENGINE_URL (http://127.0.0.1:PORT), TENANT, WRITE_KEY,
//        CHROMIUM (default /usr/bin/chromium), OUT_DIR (screenshots),
//        CHROMIUM_ARGS (more switches, space-separated: the HTTPS test's
//        --ignore-certificate-errors-spki-list, which trusts its test CA)
//
// Prints JSON lines: {"phase": NAME} where the caller must act (then it
// waits for one line on stdin), and last {"report": {...}}.
// Scenarios:
//   tour     clicks, an ignored click, an input, SPA navigation, scrolling,
//            track(), then leaves the page
//   refused  the tenant does not allow this origin: waits for the SDK's warning
//   outage   phase "loaded" (caller stops the broker), events captured while
//            sends fail, phase "failing" (caller restarts it), waits until all
//            are delivered, leaves
//   hide     events captured right before the page closes (flush interval
//            of one minute: only the page-hide beacon can carry them)
//   cost     main-thread time per captured event (clicks and track())
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const scenario = process.argv[2];
const { ENGINE_URL, TENANT, WRITE_KEY } = process.env;
const OUT_DIR = process.env.OUT_DIR || '/tmp';
if (!scenario || !ENGINE_URL || !TENANT || !WRITE_KEY) {
  console.error('usage: ENGINE_URL=… TENANT=… WRITE_KEY=… node drive.mjs tour|refused|outage|hide|cost');
  process.exit(2);
}

const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
const phase = async (name) => {
  emit({ phase: name });
  await lines.next();
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (what, ms, cond) => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
};

// The site: every path is the app (so /products/42 reloads), but /bye.html.
const page_html = readFileSync(join(here, 'site/index.html'), 'utf8');
const bye_html = readFileSync(join(here, 'site/bye.html'));
const flush = scenario === 'hide' ? 60000 : 500;
const site = createServer((req, res) => {
  const body = req.url.startsWith('/bye.html')
    ? bye_html
    : page_html
        .replace('{{ENGINE}}', ENGINE_URL)
        .replace('{{TENANT}}', TENANT)
        .replace('{{KEY}}', WRITE_KEY)
        .replace('{{FLUSH}}', String(flush));
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(body);
});
await new Promise((r) => site.listen(0, 'localhost', r));
const SITE = `http://localhost:${site.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Root in CI: Chromium's sandbox needs a user namespace it may not get.
  args: ['--no-sandbox', ...(process.env.CHROMIUM_ARGS || '').split(' ').filter(Boolean)],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });

// Every fetch to the engine's /ingest, with how it was answered.
const requests = [];
const console_lines = [];
const watch = (page) => {
  page.on('console', (m) => console_lines.push({ type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => console_lines.push({ type: 'pageerror', text: String(e) }));
};
const record = async (req, failed) => {
  const url = req.url();
  if (!url.startsWith(`${ENGINE_URL}/ingest`)) return;
  let status = null;
  try {
    status = failed ? null : (await req.response())?.status() ?? null;
  } catch {}
  let ids = [];
  try {
    ids = JSON.parse(req.postData() || '{}').events?.map((e) => e.id) ?? [];
  } catch {}
  requests.push({
    method: req.method(),
    beacon: url.includes('?key='),
    resource: req.resourceType(),
    status,
    failure: failed ? req.failure()?.errorText ?? 'failed' : null,
    ids,
  });
};
context.on('requestfinished', (r) => record(r, false));
context.on('requestfailed', (r) => record(r, true));
const posts = () => requests.filter((r) => r.method === 'POST');

const page = await context.newPage();
watch(page);
const stats = () => page.evaluate(() => window.overwatch.stats());
const report = { scenario, site: SITE, engine: ENGINE_URL };

const open = async () => {
  await page.goto(`${SITE}/`);
  await page.waitForFunction(() => typeof window.overwatch?.stats === 'function');
};
// Playwright does not report navigator.sendBeacon's requests (pings), so
// `requests` holds the SDK's fetches only; beacons show in ClickHouse.
const BEACON_GRACE_MS = 2000;
// Leaves the page for one without the SDK, then lets the beacons finish.
const leave = async () => {
  report.stats_before_leaving = await stats();
  await page.goto(`${SITE}/bye.html`);
  await sleep(BEACON_GRACE_MS);
};

try {
  if (scenario === 'tour') {
    await open();
    await until('the first pageview delivered', 15000, () => posts().some((r) => r.status === 200));
    await page.click('#buy');
    await page.click('#private');
    await page.click('#email');
    await page.keyboard.type('someone@example.com');
    await page.click('#to-product');
    await until('the SPA path', 5000, async () => (await page.evaluate(() => location.pathname)) === '/products/42');
    await page.screenshot({ path: join(OUT_DIR, 'browser-tour.png') });
    await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
    await sleep(300);
    await page.evaluate(() => window.overwatch.track('add_to_cart', { sku: 'A-42', qty: 2 }));
    await page.evaluate(() => window.overwatch.flush());
    report.session = await page.evaluate((t) => localStorage.getItem(`ow:${t}:s`), TENANT);
    await leave();
  } else if (scenario === 'refused') {
    await open();
    await until('the SDK to say why it was refused', 15000, () =>
      console_lines.some((l) => l.text.includes('origin_not_allowed')),
    );
    await page.screenshot({ path: join(OUT_DIR, 'browser-refused.png') });
    await leave();
  } else if (scenario === 'outage') {
    await open();
    await until('the first pageview delivered', 15000, () => posts().some((r) => r.status === 200));
    await phase('loaded');
    const failing = () => posts().some((r) => r.status === 503 || r.failure);
    for (let i = 0; i < 20; i++) {
      await page.evaluate((n) => window.overwatch.track('during_outage', { n }), i);
      await sleep(150);
    }
    await until('a send refused while the broker is down', 30000, failing);
    report.captured_during_outage = 20;
    await phase('failing');
    // No flush() here: the SDK's own retries must deliver.
    await until('every event delivered after the broker came back', 120000, async () => {
      const s = await stats();
      return s.sent >= s.captured;
    });
    await leave();
  } else if (scenario === 'hide') {
    await open();
    await page.evaluate(() => {
      for (let n = 0; n < 3; n++) window.overwatch.track('last_words', { n });
    });
    report.stats_before_leaving = await stats();
    await page.close({ runBeforeUnload: true });
    await sleep(BEACON_GRACE_MS);
  } else if (scenario === 'cost') {
    // Long tasks (> 50 ms on the main thread) from the page's start.
    await page.addInitScript(() => {
      window.__longtasks = [];
      new PerformanceObserver((l) => window.__longtasks.push(...l.getEntries().map((e) => e.duration))).observe({
        type: 'longtask',
        buffered: true,
      });
    });
    await open();
    await until('the first pageview delivered', 15000, () => posts().some((r) => r.status === 200));
    report.cost = await page.evaluate(async () => {
      const o = window.overwatch;
      const n = 500;
      const measure = (fn) => {
        const s0 = o.stats();
        const t0 = performance.now();
        for (let i = 0; i < n; i++) fn(i);
        const wall = performance.now() - t0;
        const s1 = o.stats();
        return {
          events: s1.captured - s0.captured,
          sdk_ms_per_event: (s1.mainThreadMs - s0.mainThreadMs) / (s1.captured - s0.captured),
          wall_ms_per_event: wall / n,
        };
      };
      const button = document.getElementById('buy');
      const click = measure(() => button.click());
      await o.flush();
      const track = measure((i) => o.track('bench', { i }));
      await o.flush();
      return { click, track };
    });
    report.long_tasks_ms = await page.evaluate(() => window.__longtasks);
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  if (!page.isClosed()) report.stats = await stats().catch(() => null);
} catch (e) {
  report.error = String(e?.stack || e);
  if (!page.isClosed()) await page.screenshot({ path: join(OUT_DIR, `browser-${scenario}-error.png`) }).catch(() => {});
}
report.requests = requests;
report.console = console_lines;
emit({ report });
await browser.close();
site.close();
stdin.close();
process.exit(report.error ? 1 : 0);
