import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createClient } from '../src/client.js';
import { SAVE_DELAY_MS } from '../src/queue.js';
import { SESSION_MS } from '../src/session.js';
import { TENANT, fakeEnv, fakeFetch, fakeStorage, fakeTime, response, settle } from './fakes.mjs';

const cfg = { tenant: TENANT, key: 'pk_test', endpoint: 'https://ingest.example' };
const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const sent = (fetch) => fetch.calls.flatMap((c) => c.body.events);

test('events carry the common fields, then their own', async () => {
  const f = fakeEnv();
  const c = createClient(cfg, f.env);
  c.api.page();
  c.api.track('signup', { plan: 'pro' });
  await c.api.flush();
  const [pv, custom] = sent(f.env.fetch);
  assert.match(pv.id, V4);
  assert.equal(pv.tenant_id, TENANT);
  assert.match(pv.session_id, V4);
  assert.equal(pv.timestamp, new Date(f.time.now()).toISOString());
  assert.equal(pv.type, 'pageview');
  assert.equal(pv.path, '/a');
  assert.deepEqual(pv.screen, { width: 1280, height: 800 });
  assert.equal('user_id' in pv, false);
  assert.equal(custom.type, 'custom');
  assert.equal(custom.name, 'signup');
  assert.deepEqual(custom.properties, { plan: 'pro' });
  assert.equal(custom.session_id, pv.session_id);
  assert.notEqual(custom.id, pv.id);
  assert.deepEqual(c.api.stats(), { captured: 2, sent: 2, dropped: 0, retries: 0, mainThreadMs: c.api.stats().mainThreadMs });
  assert.ok(c.api.stats().mainThreadMs > 0);
});

test('identify sets user_id on later events and persists', async () => {
  const f = fakeEnv();
  const c = createClient(cfg, f.env);
  c.api.track('before');
  c.api.identify('user-42');
  c.api.track('after');
  const c2 = createClient(cfg, fakeEnv({ ls: f.ls, fetch: f.env.fetch }).env);
  c2.api.track('reloaded');
  await c.api.flush();
  await c2.api.flush();
  const evs = sent(f.env.fetch);
  assert.deepEqual(evs.map((e) => [e.name, e.user_id]), [
    ['before', undefined],
    ['after', 'user-42'],
    ['reloaded', 'user-42'],
  ]);
  c2.api.identify(null);
  c2.api.track('anon');
  await c2.api.flush();
  assert.equal(sent(f.env.fetch).at(-1).user_id, undefined);
});

test('track: properties must be a JSON object of at most 16 KB, else sent without them (one warning)', async () => {
  const f = fakeEnv();
  const c = createClient(cfg, f.env);
  const cyclic = {};
  cyclic.self = cyclic;
  for (const p of [[1, 2], 'str', 5, cyclic, { big: 'x'.repeat(17000) }, new Date()]) c.api.track('e', p);
  c.api.track('ok', { a: 1 });
  c.api.track('none');
  c.api.track(''); // no name: not captured
  c.api.track('   ');
  await c.api.flush();
  const evs = sent(f.env.fetch);
  assert.equal(evs.length, 8);
  assert.ok(evs.slice(0, 6).every((e) => !('properties' in e)));
  assert.deepEqual(evs[6].properties, { a: 1 });
  assert.equal(f.warnings.length, 2, f.warnings.join('\n'));
  assert.match(f.warnings[0], /^\[overwatch\] .*properties/);
  assert.match(f.warnings[1], /^\[overwatch\] .*name/);
});

test('events over 32 KB are dropped and counted', async () => {
  const f = fakeEnv();
  f.env.ctx = () => ({ path: '/', title: '\u0001'.repeat(6000) }); // escapes to 36 KB of JSON
  const c = createClient(cfg, f.env);
  c.api.page();
  await c.api.flush();
  assert.equal(f.env.fetch.calls.length, 0);
  assert.deepEqual({ ...c.api.stats(), mainThreadMs: 0 }, { captured: 1, sent: 0, dropped: 1, retries: 0, mainThreadMs: 0 });
});

test('the 50th queued event triggers a send', async () => {
  const f = fakeEnv();
  const c = createClient(cfg, f.env);
  for (let i = 0; i < 49; i++) c.api.track('e');
  await settle();
  assert.equal(f.env.fetch.calls.length, 0);
  c.api.track('e');
  await settle();
  assert.equal(f.env.fetch.calls.length, 1);
  assert.equal(f.env.fetch.calls[0].body.events.length, 50);
});

test('undelivered events survive a reload and go out from the next page', async () => {
  const ls = fakeStorage();
  const down = fakeEnv({ ls, fetch: fakeFetch([response(503)]) });
  const c = createClient(cfg, down.env);
  c.api.track('a');
  c.api.track('b');
  await c.api.flush();
  down.time.advance(SAVE_DELAY_MS); // the coalesced write
  const ids = down.env.fetch.calls[0].body.events.map((e) => e.id);
  // Reload: a new client over the same storage.
  const up = fakeEnv({ ls });
  const c2 = createClient(cfg, up.env);
  await c2.api.flush();
  assert.deepEqual(sent(up.env.fetch).map((e) => e.id), ids);
  assert.equal(c2.api.stats().sent, 2);
});

test('the session renews after 30 minutes without events', async () => {
  const f = fakeEnv();
  const c = createClient(cfg, f.env);
  c.api.track('a');
  f.time.advance(SESSION_MS - 1000);
  c.api.track('b');
  f.time.advance(SESSION_MS + 1000);
  c.api.track('c');
  await c.api.flush();
  const [a, b, cc] = sent(f.env.fetch).map((e) => e.session_id);
  assert.equal(a, b);
  assert.notEqual(b, cc);
});

test('optOut clears the queue, stops capture, and persists; optIn resumes', async () => {
  const f = fakeEnv();
  const c = createClient(cfg, f.env);
  c.api.track('a');
  f.time.advance(SAVE_DELAY_MS);
  c.api.optOut();
  assert.equal(f.ls.getItem(`ow:${TENANT}:q`), null, 'stored queue cleared');
  c.api.track('b');
  await c.api.flush();
  assert.equal(f.env.fetch.calls.length, 0);
  // Reload: still opted out.
  const f2 = fakeEnv({ ls: f.ls });
  const c2 = createClient(cfg, f2.env);
  c2.api.page();
  await c2.api.flush();
  assert.equal(f2.env.fetch.calls.length, 0);
  assert.equal(c2.api.stats().captured, 0);
  c2.api.optIn();
  c2.api.track('c');
  await c2.api.flush();
  assert.deepEqual(sent(f2.env.fetch).map((e) => e.name), ['c']);
  const c3 = createClient(cfg, fakeEnv({ ls: f.ls }).env);
  c3.api.track('d');
  assert.equal(c3.api.stats().captured, 1, 'optIn persisted');
});

test('off (Global Privacy Control): nothing captured or sent, stored events left alone', async () => {
  const ls = fakeStorage();
  const before = fakeEnv({ ls, fetch: fakeFetch([response(503)]) });
  createClient(cfg, before.env).api.track('x');
  before.time.advance(SAVE_DELAY_MS);
  const f = fakeEnv({ ls });
  const c = createClient({ ...cfg, off: true }, f.env);
  c.api.page();
  c.api.optIn();
  c.api.track('y');
  c.tick();
  c.hide();
  await c.api.flush();
  assert.equal(f.env.fetch.calls.length, 0);
  assert.equal(f.beacons.length, 0);
  assert.equal(c.api.stats().captured, 0);
  assert.ok(ls.getItem(`ow:${TENANT}:q`));
});

test('the API never throws into the page, even when storage does', async () => {
  const f = fakeEnv({ ls: fakeStorage({ broken: true }) });
  f.env.ctx = () => {
    throw new Error('boom');
  };
  const c = createClient(cfg, f.env);
  assert.doesNotThrow(() => {
    c.api.page();
    c.api.track('x', { a: 1n });
    c.api.identify({ toString: () => 'u' });
    c.api.optOut();
    c.api.optIn();
  });
  await c.api.flush();
  const good = fakeEnv({ ls: fakeStorage({ broken: true }) });
  const c2 = createClient(cfg, good.env);
  c2.api.identify('u');
  c2.api.track('x');
  await c2.api.flush();
  assert.equal(sent(good.env.fetch)[0].user_id, 'u', 'memory fallback');
});

test('a page that loads opted out discards events another tab left queued', async () => {
  const ls = fakeStorage();
  const other = fakeEnv({ ls, fetch: fakeFetch([response(503)]) });
  createClient(cfg, other.env).api.track('other-tab');
  other.time.advance(SAVE_DELAY_MS);
  ls.setItem(`ow:${TENANT}:off`, '1'); // opted out elsewhere
  const f = fakeEnv({ ls });
  const c = createClient(cfg, f.env);
  c.tick();
  c.hide();
  await c.api.flush();
  assert.equal(f.env.fetch.calls.length + f.beacons.length, 0);
  assert.equal(ls.getItem(`ow:${TENANT}:q`), null);
});
