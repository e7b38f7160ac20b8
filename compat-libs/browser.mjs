// The browser libraries of Segment (@segment/analytics-next) and PostHog
// (posthog-js) in Debian's headless Chromium, on a page of another origin
// than the engine's, with only their host pointed at a test engine
// (tests/compat_libraries.rs).
//
//   ENGINE_URL=http://127.0.0.1:PORT WRITE_KEY=pk_… RUN=<unique> [REFUSED=1]
//     [REQUEST_LOG=<file> DONE_FILE=<file>] node browser.mjs
//
// REFUSED=1: the key's tenant does not allow this page's origin; the page
// is only given time to try.
// REQUEST_LOG: each request to the engine is also appended to this file as
// one JSON line as soon as it is answered (the test watches it during a
// broker outage). DONE_FILE: the page stays open, its libraries retrying,
// until this file exists (at most 150 s), instead of a fixed 4.5 s.
//
// The page loads both libraries from this folder's node_modules (as a site
// would from its bundle), lets each send a page view, a track/capture with
// properties, a click (posthog-js autocapture) and an identify, then leaves.
// Chromium runs without --enable-automation and with a normal user agent:
// posthog-js sends nothing from a browser it takes for a bot.
//
// Prints one JSON line: {"report": {"console": [...], "requests": [...]}}:
// every console message and page error, and every request to the engine
// with its answer's status (null when it failed).
import { createServer } from 'node:http';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const { ENGINE_URL, WRITE_KEY, RUN, REQUEST_LOG, DONE_FILE } = process.env;
if (!ENGINE_URL || !WRITE_KEY || !RUN) {
  console.error('usage: ENGINE_URL=… WRITE_KEY=… RUN=… node browser.mjs');
  process.exit(2);
}

const files = {
  '/lib/analytics-next.js': join(here, 'node_modules/@segment/analytics-next/dist/umd/index.js'),
  '/lib/posthog.js': join(here, 'node_modules/posthog-js/dist/array.full.no-external.js'),
};

const page_html = `<!doctype html>
<html><head><meta charset="utf-8"><title>Compat ${RUN}</title>
<script src="/lib/analytics-next.js"></script>
<script src="/lib/posthog.js"></script>
</head><body>
<h1>Pricing</h1>
<button id="buy">Buy now</button>
<a id="next" href="/other">Next</a>
<script>
  const ENGINE = ${JSON.stringify(ENGINE_URL)};
  const KEY = ${JSON.stringify(WRITE_KEY)};
  const RUN = ${JSON.stringify(RUN)};
  window.analyticsReady = AnalyticsNext.AnalyticsBrowser.load({ writeKey: KEY, cdnURL: ENGINE })
    .then(async ([analytics]) => {
      window.segment = analytics;
      await analytics.page();
      await analytics.track(RUN + ' browser signed up', { plan: 'pro' });
      await analytics.identify(RUN + '-browser-segment-user', { email: 'browser@example.com' });
      return true;
    });
  posthog.init(KEY, {
    api_host: ENGINE,
    capture_pageview: true,
    capture_pageleave: true,
    autocapture: true,
    person_profiles: 'always',
    disable_session_recording: true,
    loaded: (ph) => {
      ph.capture(RUN + ' browser plan upgraded', { plan: 'team' });
      window.posthogReady = true;
    },
  });
</script>
</body></html>`;

const site = createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (files[path]) {
    res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
    res.end(readFileSync(files[path]));
    return;
  }
  res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(path === '/other' ? '<!doctype html><title>Other</title><p>Other page</p>' : page_html);
});
await new Promise((r) => site.listen(0, 'localhost', r));
const SITE = `http://localhost:${site.address().port}`;

const UA =
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  ignoreDefaultArgs: ['--enable-automation'],
  // Root in CI: Chromium's sandbox needs a user namespace it may not get.
  args: ['--no-sandbox', '--disable-blink-features=AutomationControlled'],
});
const context = await browser.newContext({ userAgent: UA, viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const consoleLines = [];
const requests = [];
page.on('console', (m) => consoleLines.push({ type: m.type(), text: m.text() }));
page.on('pageerror', (e) => consoleLines.push({ type: 'pageerror', text: String(e) }));
const record = async (req, failed) => {
  if (!req.url().startsWith(ENGINE_URL)) return;
  let status = null;
  try {
    status = failed ? null : (await req.response())?.status() ?? null;
  } catch {}
  const entry = { method: req.method(), url: req.url().slice(ENGINE_URL.length), status, failure: req.failure()?.errorText ?? null };
  requests.push(entry);
  if (REQUEST_LOG) appendFileSync(REQUEST_LOG, JSON.stringify(entry) + '\n');
};
page.on('requestfinished', (r) => record(r, false));
page.on('requestfailed', (r) => record(r, true));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (what, ms, cond) => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
};

let error = null;
try {
  // The run in the URL: every stored event carries it (the test's filter).
  await page.goto(`${SITE}/pricing?utm_source=compat&run=${RUN}`);
  if (process.env.REFUSED) {
    await sleep(5000);
    throw new Error('refused scenario: done');
  }
  await until('both libraries loaded', 20000, () =>
    page.evaluate(() => Boolean(window.posthogReady) && Boolean(window.segment)),
  );
  await page.evaluate(() => window.analyticsReady);
  await page.click('#buy');
  await page.evaluate((run) => window.posthog.identify(run + '-browser-posthog-user'), RUN);
  // posthog-js sends its queue every ~3 s; then the page is left (its
  // unload flush).
  if (DONE_FILE) {
    await until('the test to be done (DONE_FILE)', 150000, () => existsSync(DONE_FILE));
  } else {
    await sleep(4500);
  }
  await page.goto(`${SITE}/other`);
  await sleep(1500);
} catch (e) {
  error = String(e);
}
await browser.close();
site.close();
process.stdout.write(JSON.stringify({ report: { console: consoleLines, requests, error } }) + '\n');
