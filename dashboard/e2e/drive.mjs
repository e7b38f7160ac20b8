// Drives a real headless Chromium through the analytics dashboard, for
// tests/dashboard.rs: signs in, reads every panel from the DOM, filters by a
// click, and saves a screenshot.
//
//   ENGINE_URL=http://127.0.0.1:PORT TENANT=… SECRET_KEY=… node e2e/drive.mjs
//   env: CHROMIUM (default /usr/bin/chromium), OUT_DIR (screenshot),
//        FILTER_PAGE (a page in the Top pages panel to click)
//   ENGINE_URL=… node e2e/drive.mjs oncall
//        the on-call page: gives ADMIN_TOKEN when set, waits for POLLS polls
//        (default 6), reads the cards, charts and latency table, saves
//        oncall.png
//
// Prints one JSON line: the report.
import { chromium } from 'playwright-core';

const { ENGINE_URL, TENANT, SECRET_KEY, FILTER_PAGE } = process.env;
const OUT_DIR = process.env.OUT_DIR || '/tmp';
const ONCALL = process.argv[2] === 'oncall';
if (!ENGINE_URL || (!ONCALL && (!TENANT || !SECRET_KEY))) {
  console.error('usage: ENGINE_URL=… TENANT=… SECRET_KEY=… node e2e/drive.mjs');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const report = { console_errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => {
    if (m.type() === 'error') report.console_errors.push(m.text());
  });
  page.on('pageerror', (e) => report.console_errors.push(String(e)));
  if (ONCALL) {
    await oncall(page);
  } else {
    await dashboard(page);
  }
} catch (e) {
  report.error = String(e.stack || e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + '\n');

async function oncall(page) {
  const polls = Number(process.env.POLLS || 6);
  await page.goto(`${ENGINE_URL}/debug/dashboard`);
  if (process.env.ADMIN_TOKEN) {
    // The engine wants its token: the page asks, and keeps it in the tab.
    await page.waitForSelector('#token-form:not([hidden])');
    report.asked_for_token = await page.textContent('#status');
    await page.fill('#token-form input[name=token]', process.env.ADMIN_TOKEN);
    await page.click('#token-form button');
    // The 401s before the token are expected: count errors from two polls
    // after the page took it (a poll already in flight may still get 401).
    await page.waitForSelector('#token-form', { state: 'hidden' });
    const p0 = await page.evaluate(() => Number(document.body.dataset.polls || 0));
    await page.waitForFunction((n) => Number(document.body.dataset.polls || 0) >= n + 2, p0);
    report.console_errors = [];
  }
  await page.waitForFunction((n) => Number(document.body.dataset.polls || 0) >= n, polls, { timeout: 30000 });
  Object.assign(
    report,
    await page.evaluate(() => {
      const cards = {};
      for (const c of document.querySelectorAll('.kpi')) cards[c.dataset.metric] = c.querySelector('.value').textContent;
      const table = {};
      for (const r of document.querySelectorAll('#latency-table tr[data-stage]')) {
        table[r.dataset.stage] = [...r.querySelectorAll('td')].slice(1).map((c) => c.textContent);
      }
      return {
        roles: document.getElementById('roles').textContent,
        pills: [...document.querySelectorAll('#pills .pill')].map((p) => p.textContent),
        cards,
        table,
        edge_latency_points: Number(document.getElementById('edge-latency').dataset.points || 0),
        sink_latency_points: Number(document.getElementById('sink-latency').dataset.points || 0),
        canvases: document.querySelectorAll('canvas').length,
        status: document.getElementById('status').textContent,
        shards: Object.fromEntries([...document.querySelectorAll('#shards tr[data-shard]')].map((r) => [r.dataset.shard, r.dataset.state])),
        fleet: [...document.querySelectorAll('#fleet tr[data-node]')].map((r) => ({ node: r.dataset.node, state: r.dataset.state })),
      };
    }),
  );
  await page.screenshot({ path: `${OUT_DIR}/oncall.png`, fullPage: true });
}

async function dashboard(page) {
  await page.goto(`${ENGINE_URL}/dashboard`);
  // A wrong key stays on the sign-in form, saying why.
  await page.fill('input[name=tenant]', TENANT);
  await page.fill('input[name=key]', 'sk_wrong');
  await page.click('button[type=submit]');
  await page.waitForFunction(() => document.getElementById('signin-error').textContent !== '');
  report.wrong_key_message = await page.textContent('#signin-error');
  // 401s of the wrong key are expected console noise; count from here.
  report.console_errors = [];

  await page.fill('input[name=tenant]', TENANT);
  await page.fill('input[name=key]', SECRET_KEY);
  await page.click('button[type=submit]');
  await page.waitForSelector('body[data-loaded]', { timeout: 30000 });
  report.url = page.url();
  report.session_key_stored = await page.evaluate(() => sessionStorage.getItem('overwatch.key') !== null);
  report.local_storage_items = await page.evaluate(() => localStorage.length);

  const read = () =>
    page.evaluate(() => {
      const kpis = {};
      for (const k of document.querySelectorAll('.kpi')) {
        kpis[k.dataset.metric] = k.querySelector('.value').textContent;
      }
      const panels = {};
      for (const p of document.querySelectorAll('.panel')) {
        const rows = {};
        for (const r of p.querySelectorAll('tr.row')) {
          const cells = [...r.querySelectorAll('td.n')].map((c) => c.textContent);
          rows[r.querySelector('.label').textContent] = cells;
        }
        panels[p.querySelector('h2').textContent] = rows;
      }
      const vitals = {};
      for (const v of document.querySelectorAll('.vital')) {
        vitals[v.dataset.metric] = { value: v.querySelector('.value').textContent, rating: v.className.replace('vital ', '') };
      }
      const chart = document.getElementById('chart');
      return {
        kpis,
        panels,
        vitals,
        chart_points: Number(chart.dataset.points),
        chart_visitors: Number(chart.dataset.visitors),
        chart_canvas: !!chart.querySelector('canvas'),
        filters: [...document.querySelectorAll('#filters .chip')].map((c) => c.textContent),
      };
    });
  await page.waitForFunction(() => document.getElementById('realtime-count').textContent !== '–');
  report.realtime = await page.textContent('#realtime-count');
  report.before = await read();
  await page.screenshot({ path: `${OUT_DIR}/dashboard.png`, fullPage: true });

  if (FILTER_PAGE) {
    const loaded = await page.evaluate(() => document.body.dataset.loaded);
    await page.click(`.panel[data-dimension="event:page"] tr.row:has(.label:text-is("${FILTER_PAGE}"))`);
    await page.waitForFunction((l) => document.body.dataset.loaded !== l, loaded);
    report.filtered = await read();
  }
}
