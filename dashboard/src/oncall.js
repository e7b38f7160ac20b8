// The on-call page: polls GET /debug/stats every second; rates come from
// counter deltas, latency by percentile from the HdrHistograms (exact since
// start, or the last seconds from bucket deltas), drawn on a log "nines"
// axis like HdrHistogram's own plotter.
import uPlot from 'uplot';
import { $, el } from './dom.js';
import 'uplot/dist/uPlot.min.css';
import './app.css';
import './oncall.css';

const POLL_MS = 1000;
/** Seconds of history the time charts keep. */
const HISTORY = 300;

const COLORS = ['#4f46e5', '#0ea5e9', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#64748b', '#ec4899'];

/** Snapshots, oldest first, at most HISTORY + 1. */
const snaps = [];
const charts = {};

const fmtMs = (us) => (us == null ? '–' : us >= 1e6 ? `${(us / 1e6).toFixed(2)} s` : us >= 1000 ? `${(us / 1000).toFixed(1)} ms` : `${Math.round(us)} µs`);
const fmtRate = (v) => (v >= 10000 ? `${(v / 1000).toFixed(1)}k` : `${Math.round(v)}`);

/** "Nines" of a percentile: 50% → 2, 99% → 100, 99.999% → 100000. */
const nines = (p) => 1 / (1 - Math.min(p, 99.9999) / 100);
const NINE_TICKS = [2, 10, 100, 1000, 10000, 100000];
const NINE_LABELS = { 2: '50%', 10: '90%', 100: '99%', 1000: '99.9%', 10000: '99.99%', 100000: '99.999%' };

/**
 * The panels' view of one /debug/stats snapshot, whose names are the
 * Prometheus names: counters, gauges, one-label metrics and latencies.
 */
function view(raw) {
  const c = raw.counters;
  const g = raw.gauges;
  const l = raw.labeled;
  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
  return {
    time_ms: raw.time_ms,
    bounds_us: raw.bounds_us,
    percentiles: raw.percentiles,
    edge: raw.parts.includes('edge'),
    sink: raw.parts.includes('sink'),
    accepted: c.ingest_events_accepted_total || 0,
    rows: c.sink_rows_inserted_total || 0,
    rejected: l.ingest_events_rejected_total || {},
    responses: l.ingest_http_responses_total || {},
    ring_depth: sum(l.ingest_ring_depth),
    inflight: g.broker_inflight_records,
    broker_up: g.broker_up === 1,
    clickhouse_up: g.sink_clickhouse_up === 1,
    paused: g.sink_paused === 1,
    lag: g.sink_consumer_lag,
    // "address roles version" → seconds since its last heartbeat
    fleet: l.engine_fleet_node_seen_seconds_ago || {},
    // "shard/url" → 1 up, 0 down
    replicas: l.sink_clickhouse_replica_up || {},
    // ingest_request_latency_seconds → ingest_request
    latency: Object.fromEntries(Object.entries(raw.latency).map(([k, v]) => [k.replace(/(_latency)?_seconds$/, ''), v])),
  };
}

function rate(key, pick) {
  if (snaps.length < 2) return 0;
  const a = snaps[snaps.length - 2];
  const b = snaps[snaps.length - 1];
  const dt = (b.time_ms - a.time_ms) / 1000;
  return dt > 0 ? Math.max(0, (pick(b) - pick(a)) / dt) : 0;
}

/** Percentile curve of a stage over the window (seconds; 0: since start). */
function curve(stage, windowSecs) {
  const now = snaps[snaps.length - 1];
  const h = now.latency[stage];
  if (!h) return null;
  if (windowSecs > 0 && snaps.length > 1) {
    const then = snaps[Math.max(0, snaps.length - 1 - windowSecs)];
    const old = then.latency[stage];
    const cum = h.cumulative.map((c, i) => c - (old ? old.cumulative[i] : 0));
    const total = cum[cum.length - 1];
    if (total > 0) {
      return now.percentiles.map((p) => {
        const target = (p / 100) * total;
        const i = cum.findIndex((c) => c >= target);
        return now.bounds_us[i < 0 ? cum.length - 1 : i];
      });
    }
  }
  return h.count > 0 ? h.percentiles_us : null;
}

function timeChart(id, series, yLabel) {
  const box = $(id);
  const opts = {
    width: Math.max(box.clientWidth, 300),
    height: 220,
    series: [{}, ...series.map((s, i) => ({ label: s, stroke: COLORS[i % COLORS.length], width: 2 }))],
    axes: [{}, { label: yLabel, size: 60 }],
  };
  return new uPlot(opts, [[], ...series.map(() => [])], box);
}

function latencyChart(id, stages) {
  const box = $(id);
  const opts = {
    width: Math.max(box.clientWidth, 300),
    height: 240,
    scales: { x: { time: false, distr: 3 }, y: { distr: 3 } },
    series: [{ label: 'percentile', value: (u, v) => (v == null ? '' : NINE_LABELS[v] || `${(100 - 100 / v).toFixed(3)}%`) }, ...stages.map((s, i) => ({ label: s, stroke: COLORS[i], width: 2, points: { show: true }, value: (u, v) => fmtMs(v) }))],
    axes: [
      { splits: () => NINE_TICKS, values: (u, ticks) => ticks.map((t) => NINE_LABELS[t] || '') },
      { size: 70, values: (u, ticks) => ticks.map(fmtMs) },
    ],
  };
  return new uPlot(opts, [[], ...stages.map(() => [])], box);
}

function cards(now) {
  const box = $('cards');
  box.replaceChildren();
  const rejected = rate('rejected', (s) => Object.values(s.rejected).reduce((a, b) => a + b, 0));
  const errors = rate('5xx', (s) => Object.entries(s.responses).filter(([k]) => k.startsWith('5')).reduce((a, [, v]) => a + v, 0));
  const items = [];
  if (now.edge) {
    items.push(['accepted', 'Events accepted /s', fmtRate(rate('a', (s) => s.accepted))]);
    items.push(['rejected', 'Events rejected /s', fmtRate(rejected)]);
    items.push(['errors', '5xx answers /s', fmtRate(errors)]);
    items.push(['inflight', 'Broker in flight', String(now.inflight)]);
  }
  if (now.sink) {
    items.push(['rows', 'Rows into ClickHouse /s', fmtRate(rate('r', (s) => s.rows))]);
    items.push(['lag', 'Consumer lag (records)', String(now.lag)]);
  }
  for (const [key, label, value] of items) {
    const c = el('div', 'card kpi');
    c.dataset.metric = key;
    c.append(el('h2', null, label), el('p', 'value', value));
    box.append(c);
  }
  const pills = $('pills');
  pills.replaceChildren();
  const pill = (ok, text) => pills.append(el('span', `pill ${ok ? 'ok' : 'bad'}`, text));
  if (now.edge) pill(now.broker_up, now.broker_up ? 'broker up' : 'broker down');
  if (now.sink) {
    pill(now.clickhouse_up, now.clickhouse_up ? 'ClickHouse up' : 'ClickHouse down');
    if (now.paused) pill(false, 'sink paused');
    for (const [shard, replicas] of byShard(now.replicas)) {
      if (shardState(replicas) === 'down') pill(false, `shard ${shard} down`);
    }
  }
  $('roles').textContent = [now.edge && 'edge', now.sink && 'sink'].filter(Boolean).join(' + ');
}

/** Replicas by shard: [[shard, [[url, up], …]], …], in shard order. */
function byShard(replicas) {
  const by = new Map();
  for (const [key, up] of Object.entries(replicas)) {
    const i = key.indexOf('/');
    const shard = key.slice(0, i);
    if (!by.has(shard)) by.set(shard, []);
    by.get(shard).push([key.slice(i + 1), up === 1]);
  }
  return [...by.entries()].sort((a, b) => Number(a[0]) - Number(b[0]));
}

const shardState = (replicas) => (replicas.every(([, up]) => up) ? 'ok' : replicas.some(([, up]) => up) ? 'degraded' : 'down');

function shardsTable(now) {
  const shards = byShard(now.replicas);
  const many = shards.length > 1 || shards.some(([, r]) => r.length > 1);
  $('shards-card').hidden = !many;
  const t = $('shards');
  t.replaceChildren();
  if (!many) return;
  const head = el('tr');
  for (const h of ['shard', 'state', 'replicas']) head.append(el('th', null, h));
  t.append(head);
  for (const [shard, replicas] of shards) {
    const tr = el('tr');
    tr.dataset.shard = shard;
    const state = shardState(replicas);
    tr.dataset.state = state;
    const cell = el('td');
    for (const [url, up] of replicas) cell.append(el('span', `pill ${up ? 'ok' : 'bad'}`, `${url} ${up ? 'up' : 'down'}`));
    const stateCell = el('td');
    stateCell.append(el('span', `pill ${state === 'ok' ? 'ok' : 'bad'}`, state));
    tr.append(el('td', null, shard), stateCell, cell);
    t.append(tr);
  }
}

function fleetTable(now) {
  const rows = Object.entries(now.fleet).sort((a, b) => a[1] - b[1]);
  $('fleet-card').hidden = rows.length === 0;
  const t = $('fleet');
  t.replaceChildren();
  if (!rows.length) return;
  const head = el('tr');
  for (const h of ['node', 'roles', 'version', 'last heartbeat', 'state']) head.append(el('th', null, h));
  t.append(head);
  for (const [label, ago] of rows) {
    const [address, roles, version] = label.split(' ');
    const live = ago <= 30;
    const tr = el('tr');
    tr.dataset.node = address;
    tr.dataset.state = live ? 'live' : 'gone';
    const stateCell = el('td');
    stateCell.append(el('span', `pill ${live ? 'ok' : 'bad'}`, live ? 'live' : 'gone'));
    tr.append(el('td', null, address), el('td', null, roles), el('td', null, version), el('td', 'n', `${ago} s ago`), stateCell);
    t.append(tr);
  }
}

function push(chart, row) {
  if (!chart) return;
  const data = chart.data.map((s, i) => [...s, row[i]].slice(-HISTORY));
  chart.setData(data);
}

function latencyTable(now) {
  const t = $('latency-table');
  t.replaceChildren();
  const head = el('tr');
  head.append(el('th', null, 'stage'), el('th', 'n', 'count'));
  const shown = [0, 2, 4, 6, 8, 10];
  for (const i of shown) head.append(el('th', 'n', `p${now.percentiles[i]}`));
  head.append(el('th', 'n', 'max'));
  t.append(head);
  for (const [stage, h] of Object.entries(now.latency)) {
    const tr = el('tr');
    tr.dataset.stage = stage;
    tr.append(el('td', null, stage), el('td', 'n', String(h.count)));
    for (const i of shown) tr.append(el('td', 'n', h.count ? fmtMs(h.percentiles_us[i]) : '–'));
    tr.append(el('td', 'n', h.count ? fmtMs(h.percentiles_us[h.percentiles_us.length - 1]) : '–'));
    t.append(tr);
  }
}

function draw() {
  const now = snaps[snaps.length - 1];
  const t = now.time_ms / 1000;
  cards(now);
  shardsTable(now);
  fleetTable(now);
  latencyTable(now);
  const reasons = Object.keys(now.rejected);
  const statuses = Object.keys(now.responses);
  if (now.edge) {
    charts.events ||= timeChart('events-chart', ['accepted', 'rejected'], 'events/s');
    const rejected = (s) => Object.values(s.rejected).reduce((a, b) => a + b, 0);
    push(charts.events, [t, rate('a', (s) => s.accepted), rate('r', rejected)]);
    // Reasons, only those seen in the last second.
    const why = reasons.map((r) => [r, rate(r, (s) => s.rejected[r] || 0)]).filter(([, v]) => v > 0);
    $('reasons').textContent = why.length ? `rejected by reason: ${why.map(([r, v]) => `${r} ${fmtRate(v)}/s`).join(', ')}` : '';
    if (!charts.status || charts.statusKeys !== statuses.join()) {
      charts.status?.destroy();
      charts.status = timeChart('status-chart', statuses, 'answers/s');
      charts.statusKeys = statuses.join();
    }
    push(charts.status, [t, ...statuses.map((k) => rate(k, (s) => s.responses[k] || 0))]);
    charts.queue ||= timeChart('queue-chart', ['ring depth (all shards)', 'broker in flight'], 'records');
    push(charts.queue, [t, now.ring_depth, now.inflight]);
  }
  if (now.sink) {
    charts.lag ||= timeChart('lag-chart', ['consumer lag', 'rows/s'], 'records');
    push(charts.lag, [t, Math.max(0, now.lag), rate('r', (s) => s.rows)]);
  }
  const windowSecs = Number($('window').value);
  for (const [id, prefix] of [['edge-latency', 'ingest_'], ['sink-latency', 'sink_']]) {
    const stages = Object.keys(now.latency).filter((s) => s.startsWith(prefix));
    if (!stages.length) continue;
    const key = `lat-${id}`;
    charts[key] ||= latencyChart(id, stages);
    const xs = now.percentiles.slice(0, -1).map(nines);
    const ys = stages.map((s) => (curve(s, windowSecs) || []).slice(0, -1).map((v) => (v > 0 ? v : null)));
    charts[key].setData([xs, ...ys]);
    $(id).dataset.points = String(ys.flat().filter((v) => v != null).length);
  }
  document.body.dataset.polls = String(snaps.length);
}

/** The admin token, when the engine asks for one; kept in this tab only. */
const TOKEN = 'overwatch.admin';

async function poll() {
  try {
    const token = sessionStorage.getItem(TOKEN);
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const res = await fetch('/debug/stats', { cache: 'no-store', headers });
    if (res.status === 401) {
      $('token-form').hidden = false;
      $('status').textContent = token ? 'The admin token was not accepted.' : 'This engine needs its admin token.';
      return;
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    $('token-form').hidden = true;
    snaps.push(view(await res.json()));
    if (snaps.length > HISTORY + 1) snaps.shift();
    $('status').textContent = '';
    draw();
  } catch (e) {
    $('status').textContent = `Cannot read /debug/stats: ${e.message}`;
  }
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN, String(new FormData(ev.target).get('token')).trim());
  ev.target.reset();
  poll();
});

poll();
setInterval(poll, POLL_MS);
window.addEventListener('resize', () => {
  for (const c of Object.values(charts)) {
    if (c && c.setSize) c.setSize({ width: Math.max(c.root.parentElement.clientWidth, 300), height: c.height });
  }
});
