import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createQueue } from '../src/queue.js';
import { BEACON_BYTES, createSender } from '../src/sender.js';
import { createStore } from '../src/store.js';
import { TENANT, fakeFetch, fakeStorage, fakeTime, response, settle } from './fakes.mjs';

const cfg = { endpoint: 'https://ingest.example', tenant: TENANT, key: 'pk_test' };

const setup = ({ answers, beacon = () => true, random = () => 0.5 } = {}) => {
  const time = fakeTime();
  const ls = fakeStorage();
  const stats = { captured: 0, sent: 0, dropped: 0, retries: 0, mainThreadMs: 0 };
  const warnings = [];
  const beacons = [];
  const fetch = fakeFetch(answers);
  // The queue's storage writes get their own timers, apart from the retries.
  const queue = createQueue(createStore(ls), 'q', stats, fakeTime());
  const sender = createSender(cfg, queue, stats, {
    fetch,
    beacon: (url, body) => {
      const ok = beacon(url, body);
      beacons.push({ url, body, ok });
      return ok;
    },
    setTimeout: time.setTimeout,
    clearTimeout: time.clearTimeout,
    now: time.now,
    random,
    warn: (m) => warnings.push(m),
  });
  const add = (n, extra = {}) => {
    for (let i = 0; i < n; i++)
      queue.push(JSON.stringify({ id: `e${queue.items.length}-${i}-${Math.random()}`, type: 'custom', name: 'n', ...extra }));
  };
  return { time, ls, stats, warnings, beacons, fetch, queue, sender, add };
};

const ids = (call) => call.body.events.map((e) => e.id);

test('a 200 delivers the batch: wire format, headers, stats', async () => {
  const s = setup();
  s.add(3);
  await s.sender.flush();
  assert.equal(s.fetch.calls.length, 1);
  const { url, init, body } = s.fetch.calls[0];
  assert.equal(url, 'https://ingest.example/ingest');
  assert.equal(init.method, 'POST');
  assert.equal(init.headers.Authorization, `Bearer ${TENANT}:pk_test`);
  assert.equal(init.headers['Content-Type'], 'application/json');
  assert.equal(init.credentials, 'omit');
  assert.equal(body.sent_at, new Date(s.time.now()).toISOString());
  assert.equal(body.events.length, 3);
  assert.equal(s.queue.items.length, 0);
  assert.equal(s.stats.sent, 3);
  assert.deepEqual(s.warnings, []);
});

test('batches hold at most 100 events; flush sends them all, one fetch at a time', async () => {
  const s = setup();
  s.add(250);
  s.fetch.hold = true;
  const done = s.sender.flush();
  const again = s.sender.flush(); // while in flight: waits, then sends what is left
  for (let i = 0; i < 6; i++) {
    await settle();
    s.fetch.release();
  }
  await Promise.all([done, again]);
  assert.deepEqual(s.fetch.calls.map((c) => c.body.events.length), [100, 100, 50]);
  assert.equal(s.fetch.maxInFlight(), 1);
  assert.equal(s.stats.sent, 250);
});

test('per-event rejections in a 200: one warning naming the reasons', async () => {
  const s = setup({
    answers: [
      response(200, {
        status: 'partial',
        events_accepted: 1,
        events_rejected: 2,
        errors: [
          { index: 0, reason: 'string_too_long', field: 'title' },
          { index: 2, reason: 'invalid_path', field: 'path' },
        ],
      }),
    ],
  });
  s.add(3);
  await s.sender.flush();
  assert.equal(s.warnings.length, 1);
  assert.match(s.warnings[0], /^\[overwatch\] 2 event\(s\) rejected: string_too_long \(title\), invalid_path \(path\)$/);
  assert.equal(s.stats.sent, 1);
  assert.equal(s.stats.dropped, 2);
  assert.equal(s.queue.items.length, 0);
});

for (const status of [400, 401, 403, 404, 405, 413, 415, 422]) {
  test(`${status} drops the batch with one warning, no retry`, async () => {
    const s = setup({
      answers: [response(status, { status: 'error', error: 'origin_not_allowed', message: 'origin https://x is not allowed' })],
    });
    s.add(5);
    await s.sender.flush();
    assert.equal(s.queue.items.length, 0);
    assert.equal(s.stats.dropped, 5);
    assert.equal(s.stats.retries, 0);
    assert.deepEqual(s.warnings, [
      `[overwatch] batch dropped (${status} origin_not_allowed): origin https://x is not allowed`,
    ]);
    assert.deepEqual(s.time.pending(), []);
  });
}

test('a 400 where every event was rejected names the reasons', async () => {
  const errors = [
    { index: 0, reason: 'invalid_path', field: 'path' },
    { index: 1, reason: 'invalid_path', field: 'path' },
  ];
  const s = setup({ answers: [response(400, { status: 'error', events_accepted: 0, errors })] });
  s.add(2);
  await s.sender.flush();
  assert.equal(s.stats.dropped, 2);
  assert.deepEqual(s.warnings, ['[overwatch] batch dropped (400): invalid_path (path)']);
});

test('a refusal without a JSON body still warns once', async () => {
  const s = setup({ answers: [response(404, 'not json')] });
  s.add(1);
  await s.sender.flush();
  assert.deepEqual(s.warnings, ['[overwatch] batch dropped (404): ']);
});

for (const [name, answer] of [
  ['503', response(503, { error: 'broker_unavailable' }, { 'retry-after': '1' })],
  ['429', response(429, { error: 'rate_limited' }, { 'retry-after': '2' })],
  ['408', response(408)],
  ['500', response(500)],
  ['a network error', new TypeError('Failed to fetch')],
]) {
  test(`${name} keeps the events and retries them with the same ids`, async () => {
    const s = setup({ answers: [answer, response(200)] });
    s.add(4);
    await s.sender.flush();
    assert.equal(s.queue.items.length, 4);
    assert.equal(s.stats.retries, 1);
    assert.equal(s.stats.sent, 0);
    assert.deepEqual(s.warnings, []);
    assert.equal(s.time.pending().length, 1);
    s.time.advance(60e3);
    await settle();
    await s.sender.flush();
    assert.equal(s.fetch.calls.length, 2);
    assert.deepEqual(ids(s.fetch.calls[1]), ids(s.fetch.calls[0]));
    assert.notEqual(s.fetch.calls[1].body.sent_at, s.fetch.calls[0].body.sent_at, 'sent_at set per attempt');
    assert.equal(s.queue.items.length, 0);
    assert.equal(s.stats.sent, 4);
  });
}

test('retries back off exponentially; Retry-After is a floor; success resets', async () => {
  const s = setup({ answers: (n) => (n < 7 ? response(503) : n == 7 ? response(429, {}, { 'retry-after': '45' }) : response(200)), random: () => 0.5 });
  s.add(1);
  const delays = [];
  await s.sender.flush();
  for (let i = 0; i < 8; i++) {
    const [d] = s.time.pending();
    delays.push(d);
    s.time.advance(d);
    await settle();
    await settle();
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 45000]);
  assert.equal(s.stats.retries, 8);
  assert.equal(s.queue.items.length, 0);
});

test('automatic sends wait out the backoff; flush() does not', async () => {
  const s = setup({ answers: [response(503, {}, { 'retry-after': '10' }), response(200)] });
  s.add(1);
  await s.sender.flush();
  s.sender.tick();
  await settle();
  assert.equal(s.fetch.calls.length, 1, 'tick inside the backoff window sends nothing');
  await s.sender.flush();
  assert.equal(s.fetch.calls.length, 2);
  assert.deepEqual(s.time.pending(), [], 'the scheduled retry is cancelled');
});

test('tick sends when idle and skips while a fetch is in flight', async () => {
  const s = setup();
  s.sender.tick();
  assert.equal(s.fetch.calls.length, 0, 'nothing queued');
  s.add(2);
  s.fetch.hold = true;
  s.sender.tick();
  s.add(1);
  s.sender.tick();
  await settle();
  assert.equal(s.fetch.calls.length, 1);
  s.fetch.hold = false;
  s.fetch.release();
  await settle();
  await settle();
  s.sender.tick();
  await settle();
  assert.equal(s.fetch.calls.length, 2);
});

test('hide beacons everything queued with the key in the query, as text', () => {
  const s = setup();
  s.add(150);
  s.sender.hide();
  assert.equal(s.beacons.length, 2);
  const url = new URL(s.beacons[0].url);
  assert.equal(url.origin + url.pathname, 'https://ingest.example/ingest');
  assert.equal(url.searchParams.get('key'), `${TENANT}:pk_test`);
  assert.deepEqual(s.beacons.map((b) => JSON.parse(b.body).events.length), [100, 50]);
  assert.equal(s.queue.items.length, 0);
  assert.equal(s.stats.sent, 150);
  assert.equal(s.ls.getItem('q'), null, 'storage updated at once');
  assert.equal(s.fetch.calls.length, 0);
});

test('beacon bodies stay under 60 KB', () => {
  const s = setup();
  s.add(40, { properties: { blob: 'é'.repeat(3000) } }); // ~6 KB of UTF-8 each
  s.sender.hide();
  assert.ok(s.beacons.length > 3);
  for (const b of s.beacons) assert.ok(Buffer.byteLength(b.body) < BEACON_BYTES, `${Buffer.byteLength(b.body)}`);
  assert.equal(s.beacons.reduce((n, b) => n + JSON.parse(b.body).events.length, 0), 40);
});

test('a refused beacon falls back to a keepalive fetch with the Authorization header', async () => {
  const s = setup({ beacon: () => false });
  s.add(3);
  s.sender.hide();
  assert.equal(s.fetch.calls.length, 1);
  assert.equal(s.fetch.calls[0].init.keepalive, true);
  assert.equal(s.fetch.calls[0].init.headers.Authorization, `Bearer ${TENANT}:pk_test`);
  assert.equal(s.queue.items.length, 3, 'kept (and stored) until the answer');
  assert.equal(JSON.parse(s.ls.getItem('q')).length, 3);
  await settle();
  await settle();
  assert.equal(s.queue.items.length, 0);
  assert.equal(s.stats.sent, 3);
});

test('events beaconed while their fetch is in flight are counted once', async () => {
  const s = setup();
  s.add(2);
  s.fetch.hold = true;
  const done = s.sender.flush();
  await settle();
  s.sender.hide();
  s.fetch.release();
  await done;
  assert.equal(s.stats.sent, 2);
});

test('a successful flush() ends the backoff window for automatic sends', async () => {
  const s = setup({ answers: [response(503, {}, { 'retry-after': '30' }), response(200)] });
  s.add(1);
  await s.sender.flush();
  await s.sender.flush();
  s.add(1);
  s.sender.tick();
  await settle();
  assert.equal(s.fetch.calls.length, 3);
});
