// The analytics dashboard: every number on the page is one POST /api/v1/query
// with the signed-in tenant's secret key. Values from events (paths,
// referrers, selectors…) are written with textContent only, never as HTML.
import uPlot from 'uplot';
import { $, el } from './dom.js';
import 'uplot/dist/uPlot.min.css';
import './app.css';

const STORE = sessionStorage;
const TENANT = 'overwatch.tenant';
const KEY = 'overwatch.key';
const REALTIME_REFRESH_MS = 10000;
const TIMEZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';


/** Filters the user clicked: [op, dimension, [value]]. */
let filters = [];
let chart = null;
let realtimeTimer = 0;
let generation = 0;

class QueryError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function query(body) {
  const auth = `Bearer ${STORE.getItem(TENANT)}:${STORE.getItem(KEY)}`;
  const res = await fetch('/api/v1/query', {
    method: 'POST',
    headers: { Authorization: auth, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  let json = null;
  try {
    json = await res.json();
  } catch {}
  if (!res.ok) {
    throw new QueryError(res.status, json?.error, json?.message || `HTTP ${res.status}`);
  }
  return json.results;
}

// --- numbers -------------------------------------------------------------

const fmtInt = new Intl.NumberFormat('en-US');
const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });
const num = (v) => (v == null || Number.isNaN(v) ? '–' : Math.abs(v) >= 10000 ? compact.format(v) : fmtInt.format(Math.round(v * 10) / 10));
const pct = (v) => (v == null ? '–' : `${Math.round(v * 10) / 10}%`);
const duration = (s) => {
  if (s == null) return '–';
  const m = Math.floor(s / 60);
  const r = Math.round(s % 60);
  return m ? `${m}m ${r}s` : `${r}s`;
};
const ms = (v) => (v == null ? '–' : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`);

// --- ranges --------------------------------------------------------------

function startOfToday() {
  const d = new Date();
  return new Date(d.getFullYear(), d.getMonth(), d.getDate());
}

/** The chosen range and the one before it, of the same length in whole hours. */
function ranges(name) {
  const days = { day: 1, '7d': 7, '30d': 30 }[name];
  const today = startOfToday();
  const from = new Date(today.getFullYear(), today.getMonth(), today.getDate() - (days - 1));
  const hours = Math.ceil((Date.now() - from.getTime()) / 3600000);
  const prevFrom = new Date(from.getTime() - hours * 3600000);
  return {
    current: name,
    previous: [prevFrom.toISOString(), from.toISOString()],
    grain: name === 'day' ? 'hour' : 'day',
    from,
  };
}

// --- panels --------------------------------------------------------------

const KPIS = [
  ['visitors', 'Visitors', num],
  ['visits', 'Visits', num],
  ['pageviews', 'Pageviews', num],
  ['bounce_rate', 'Bounce rate', pct, true],
  ['visit_duration', 'Visit duration', duration],
];

/** Counting pageviews only lets the engine answer from its hourly roll-up. */
const PAGEVIEWS = ['is', 'event:type', ['pageview']];

/** Tables: title, dimension, metrics (first sorts), extra filters. */
const PANELS = [
  ['Top pages', 'event:page', ['visitors', 'pageviews'], [PAGEVIEWS]],
  ['Entry pages', 'visit:entry_page', ['visits', 'bounce_rate'], []],
  ['Exit pages', 'visit:exit_page', ['visits'], []],
  ['Sources', 'visit:source', ['visitors', 'visits'], []],
  ['Referrers', 'visit:referrer', ['visits'], []],
  ['UTM sources', 'visit:utm_source', ['visits'], []],
  ['UTM mediums', 'visit:utm_medium', ['visits'], []],
  ['UTM campaigns', 'visit:utm_campaign', ['visits'], []],
  ['Browsers', 'visit:browser', ['visitors'], []],
  ['Operating systems', 'visit:os', ['visitors'], []],
  ['Devices', 'visit:device', ['visitors'], []],
  ['Custom events', 'event:name', ['events', 'visitors'], [['is', 'event:type', ['custom']]]],
  ['Clicks by selector', 'event:selector', ['clicks'], [['is', 'event:type', ['click']]]],
  ['Scroll depth by page', 'event:page', ['scroll_depth'], [['is', 'event:type', ['scroll']]]],
];

/** The visit panels' dimensions and metrics, asked for in one query. */
const VISIT_DIMENSIONS = PANELS.map(([, d]) => d).filter((d) => d.startsWith('visit:'));
const VISIT_METRICS = ['visits', 'visitors', 'bounce_rate'];

const LABELS = {
  visitors: 'Visitors',
  visits: 'Visits',
  pageviews: 'Pageviews',
  events: 'Events',
  clicks: 'Clicks',
  bounce_rate: 'Bounce',
  scroll_depth: 'Depth',
};
const FORMAT = { bounce_rate: pct, scroll_depth: pct };

/** Web vitals with Google's good / poor thresholds. */
const VITALS = [
  ['lcp_p75', 'LCP', 2500, 4000, ms],
  ['inp_p75', 'INP', 200, 500, ms],
  ['cls_p75', 'CLS', 0.1, 0.25, (v) => (v == null ? '–' : v.toFixed(3))],
  ['fcp_p75', 'FCP', 1800, 3000, ms],
  ['ttfb_p75', 'TTFB', 800, 1800, ms],
];

function rating(v, good, poor) {
  if (v == null) return 'none';
  if (v <= good) return 'good';
  if (v <= poor) return 'needs-improvement';
  return 'poor';
}

function addFilter(dimension, value) {
  if (filters.some(([, d, [v]]) => d === dimension && v === value)) return;
  filters.push(['is', dimension, [value]]);
  refresh();
}

function renderFilters() {
  const box = $('filters');
  box.replaceChildren();
  filters.forEach(([, d, [v]], i) => {
    const chip = el('button', 'chip');
    chip.type = 'button';
    chip.title = 'Remove this filter';
    chip.append(el('span', 'dim', `${d} is `), el('b', null, v === '' ? '(none)' : v), el('span', 'x', ' ×'));
    chip.addEventListener('click', () => {
      filters.splice(i, 1);
      refresh();
    });
    box.append(chip);
  });
}

function table(panel, rows) {
  const [title, dim, metrics] = panel;
  const card = el('section', 'card panel');
  card.dataset.dimension = dim;
  card.append(el('h2', null, title));
  if (!rows.length) {
    card.append(el('p', 'empty', 'No data'));
    return card;
  }
  const t = el('table');
  const head = el('tr');
  head.append(el('th', null, ''));
  for (const m of metrics) head.append(el('th', 'n', LABELS[m] || m));
  t.append(head);
  const max = Math.max(...rows.map((r) => r.metrics[0] || 0), 1);
  for (const r of rows) {
    const tr = el('tr', 'row');
    const value = r.dimensions[0];
    const name = el('td', 'name');
    const bar = el('span', 'bar');
    bar.style.width = `${(100 * (r.metrics[0] || 0)) / max}%`;
    name.append(bar, el('span', 'label', value === '' ? '(none)' : value));
    name.title = `Filter by ${dim} = ${value}`;
    tr.append(name);
    r.metrics.forEach((v, i) => tr.append(el('td', 'n', (FORMAT[metrics[i]] || num)(v))));
    tr.addEventListener('click', () => addFilter(dim, value));
    t.append(tr);
  }
  card.append(t);
  return card;
}

function kpiCards(now, before) {
  const box = $('kpis');
  box.replaceChildren();
  KPIS.forEach(([metric, label, fmt, lowerIsBetter], i) => {
    const v = now?.[i];
    const p = before?.[i];
    const card = el('div', 'card kpi');
    card.dataset.metric = metric;
    card.append(el('h2', null, label), el('p', 'value', fmt(v)));
    if (v != null && p != null && p !== 0) {
      const change = ((v - p) / p) * 100;
      const up = change >= 0;
      const good = lowerIsBetter ? !up : up;
      card.append(el('p', `change ${good ? 'better' : 'worse'}`, `${up ? '▲' : '▼'} ${Math.abs(change).toFixed(1)}% vs previous period`));
    } else {
      card.append(el('p', 'change', 'no previous period'));
    }
    box.append(card);
  });
}

function timeSeries(rows, grain, from) {
  // Every bucket from the range start to now, zero where no event fell.
  const key = (d) => {
    const p = (n) => String(n).padStart(2, '0');
    const day = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
    return grain === 'hour' ? `${day} ${p(d.getHours())}:00:00` : day;
  };
  const byKey = new Map(rows.map((r) => [r.dimensions[0], r.metrics]));
  const xs = [];
  const visitors = [];
  const pageviews = [];
  // Local calendar steps, so a day bucket stays at midnight across DST.
  for (let i = 0; ; i++) {
    const d = new Date(from.getFullYear(), from.getMonth(), from.getDate() + (grain === 'day' ? i : 0), grain === 'hour' ? i : 0);
    if (d.getTime() > Date.now()) break;
    const m = byKey.get(key(d)) || [0, 0];
    xs.push(d.getTime() / 1000);
    visitors.push(m[0]);
    pageviews.push(m[1]);
  }
  const box = $('chart');
  const width = Math.max(box.clientWidth, 300);
  const data = [xs, visitors, pageviews];
  if (chart) chart.destroy();
  chart = new uPlot(
    {
      width,
      height: 240,
      series: [
        {},
        { label: 'Visitors', stroke: '#4f46e5', width: 2, fill: 'rgba(79,70,229,0.08)' },
        { label: 'Pageviews', stroke: '#0ea5e9', width: 2 },
      ],
      axes: [{}, { size: 60 }],
    },
    data,
    box,
  );
  box.dataset.points = String(xs.length);
  box.dataset.visitors = String(visitors.reduce((a, b) => a + b, 0));
}

function vitals(values) {
  const box = $('vitals');
  box.replaceChildren();
  VITALS.forEach(([metric, label, good, poor, fmt], i) => {
    const v = values?.[i];
    const r = rating(v, good, poor);
    const card = el('div', `vital ${r}`);
    card.dataset.metric = metric;
    card.append(
      el('h3', null, label),
      el('p', 'value', fmt(v)),
      el('p', 'rating', r === 'none' ? 'no samples' : r.replace('-', ' ')),
      el('p', 'thresholds', `good ≤ ${fmt(good)} · poor > ${fmt(poor)}`),
    );
    box.append(card);
  });
}

async function realtime() {
  try {
    const rows = await query({ metrics: ['visitors'], date_range: 'realtime', filters });
    $('realtime-count').textContent = num(rows[0]?.metrics[0] ?? 0);
  } catch (e) {
    handle(e);
  }
}

function handle(e) {
  if (e instanceof QueryError && (e.status === 401 || e.status === 403)) {
    signOut(e.message);
    return;
  }
  $('status').textContent = e instanceof QueryError && e.status === 429 ? 'Too many queries at once; refresh in a moment.' : `A query failed: ${e.message}`;
}

async function refresh() {
  const gen = ++generation;
  renderFilters();
  $('status').textContent = '';
  const r = ranges($('range').value);
  const base = { date_range: r.current, timezone: TIMEZONE, filters };
  const kpiMetrics = KPIS.map(([m]) => m);
  // Every visit panel from one fold of the sessions: the heaviest query, so
  // it is sent first and the engine's query workers start it first.
  const visitPanels = query({ ...base, metrics: VISIT_METRICS, breakdowns: VISIT_DIMENSIONS, order_by: [['visits', 'desc']], limit: 10 });
  const jobs = [
    query({ ...base, metrics: kpiMetrics }),
    query({ ...base, date_range: r.previous, metrics: kpiMetrics }),
    query({ ...base, metrics: ['visitors', 'pageviews'], dimensions: [`time:${r.grain}`], filters: [...filters, PAGEVIEWS] }),
    query({ ...base, metrics: VITALS.map(([m]) => m) }),
    visitPanels,
    ...PANELS.map(([, dim, metrics, extra]) =>
      VISIT_DIMENSIONS.includes(dim) && !extra.length
        ? Promise.resolve(null)
        : query({
        ...base,
        metrics,
        dimensions: [dim],
        filters: [...filters, ...extra],
            order_by: [[metrics[0], 'desc']],
            limit: 10,
          }),
    ),
  ];
  const results = await Promise.allSettled(jobs);
  if (gen !== generation) return;
  const failed = results.find((x) => x.status === 'rejected');
  if (failed) handle(failed.reason);
  const ok = (i) => (results[i].status === 'fulfilled' ? results[i].value : null);
  kpiCards(ok(0)?.[0]?.metrics, ok(1)?.[0]?.metrics);
  timeSeries(ok(2) || [], r.grain, r.from);
  vitals(ok(3)?.[0]?.metrics);
  // Visit panels: rows of the one breakdown query, as [breakdown, value].
  const visits = ok(4) || [];
  const rowsOf = ([, dim, metrics, extra], i) => {
    if (!VISIT_DIMENSIONS.includes(dim) || extra.length) return ok(5 + i) || [];
    const idx = metrics.map((m) => VISIT_METRICS.indexOf(m));
    return visits
      .filter((row) => row.dimensions[0] === dim)
      .map((row) => ({ dimensions: [row.dimensions[1]], metrics: idx.map((j) => row.metrics[j]) }))
      .sort((a, b) => (b.metrics[0] || 0) - (a.metrics[0] || 0));
  };
  const panels = $('panels');
  panels.replaceChildren(...PANELS.map((p, i) => table(p, rowsOf(p, i))));
  document.body.dataset.loaded = String(gen);
  realtime();
}

function signOut(message) {
  STORE.removeItem(TENANT);
  STORE.removeItem(KEY);
  clearInterval(realtimeTimer);
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
}

function start() {
  $('signin').hidden = true;
  $('app').hidden = false;
  refresh();
  clearInterval(realtimeTimer);
  realtimeTimer = setInterval(realtime, REALTIME_REFRESH_MS);
}

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  STORE.setItem(TENANT, String(form.get('tenant')).trim());
  STORE.setItem(KEY, String(form.get('key')).trim());
  try {
    await query({ metrics: ['visits'], date_range: 'realtime' });
    ev.target.reset();
    start();
  } catch (e) {
    const why = e instanceof QueryError && (e.status === 401 || e.status === 403) ? 'Wrong tenant id or secret key' : 'Sign-in failed';
    signOut(e instanceof QueryError ? `${why}: ${e.message}` : `Cannot reach the engine: ${e.message}`);
  }
});
$('signout').addEventListener('click', () => signOut());
$('range').addEventListener('change', refresh);
window.addEventListener('resize', () => chart?.setSize({ width: Math.max($('chart').clientWidth, 300), height: 240 }));

if (STORE.getItem(TENANT) && STORE.getItem(KEY)) start();
else signOut();
