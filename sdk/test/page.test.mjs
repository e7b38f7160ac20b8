// dist/sdk.js in a simulated page (node:vm and a tiny fake DOM): the script
// tag settings, the stub queue, pageviews with SPA navigation, clicks,
// scroll depth, web vitals and delivery on hide. The built file is what is
// tested, so run `npm run build` after changing src/.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import vm from 'node:vm';
import { TENANT, fakeFetch, fakeStorage, fakeTime, settle, unbound } from './fakes.mjs';

const SDK = readFileSync(new URL('../dist/sdk.js', import.meta.url), 'utf8');

class Text {
  constructor(data) {
    this.data = data;
  }
}

/** An element with just what the SDK reads. */
class El {
  constructor(tag, attrs = {}, kids = []) {
    this.localName = tag;
    this.attrs = attrs;
    this.childNodes = [];
    this.parentElement = null;
    for (const k of kids) {
      const n = typeof k == 'string' ? new Text(k) : k;
      if (n instanceof El) n.parentElement = this;
      this.childNodes.push(n);
    }
  }
  get id() {
    return this.attrs.id || '';
  }
  get classList() {
    return (this.attrs.class || '').split(/\s+/).filter(Boolean);
  }
  get children() {
    return this.childNodes.filter((n) => n instanceof El);
  }
  sibling(d) {
    const s = this.parentElement?.children || [];
    return s[s.indexOf(this) + d] || null;
  }
  get previousElementSibling() {
    return this.sibling(-1);
  }
  get nextElementSibling() {
    return this.sibling(1);
  }
  get href() {
    return this.attrs.href == null ? '' : new URL(this.attrs.href, 'https://site.example/').href;
  }
  get isContentEditable() {
    return 'contenteditable' in this.attrs || !!this.parentElement?.isContentEditable;
  }
  /** Selector lists of `tag`, `[attr]`, `[attr=value]`, `tag[attr]` only. */
  matches(sel) {
    return sel.split(',').some((one) => {
      const [, tag, attr, value] = one.trim().match(/^([a-z]*)(?:\[([\w-]+)(?:=([\w-]+))?\])?$/);
      return (!tag || tag == this.localName) && (!attr || (attr in this.attrs && (value == null || this.attrs[attr] == value)));
    });
  }
  closest(sel) {
    for (let e = this; e; e = e.parentElement) if (e.matches(sel)) return e;
    return null;
  }
  querySelector(sel) {
    for (const c of this.children) {
      const m = c.matches(sel) ? c : c.querySelector(sel);
      if (m) return m;
    }
    return null;
  }
  *texts() {
    for (const n of this.childNodes) n instanceof Text ? yield n : yield* n.texts();
  }
}
const h = (tag, attrs, ...kids) => new El(tag, attrs || {}, kids);

/** A page at https://site.example/ with the snippet; returns handles to drive it. */
const page = ({ data = {}, stub = null, ls = fakeStorage(), gpc = false, fetch = fakeFetch(), beaconOk = true } = {}) => {
  const time = fakeTime();
  const listeners = { window: [], document: [] };
  const warnings = [];
  const beacons = [];
  const intervals = [];
  const loc = new URL('https://site.example/');
  const script = {
    src: 'https://ingest.example:8443/sdk.js',
    dataset: { tenant: TENANT, key: 'pk_test', ...data },
  };
  const body = h(
    'body',
    null,
    h('div', { id: 'app' },
      h('ul', { class: 'nav main x' },
        h('li', null, h('a', { href: '/docs?x=1' }, h('span', null, '  Read\n  the docs '))),
        h('li', null, h('a', { href: '/b' }, 'B')),
      ),
      h('button', { class: 'buy' }, 'Buy ', h('b', null, 'now')),
      h('form', null, h('textarea', null, 'typed secret'), h('div', { contenteditable: '' }, 'note')),
      h('label', null, 'Pick ', h('select', null, h('option', null, 'secret option'))),
      h('div', { 'data-ow-ignore': '' }, h('button', { id: 'ignored' }, 'Ignored')),
    ),
  );
  const on = (list) => (type, f, opts) => list.push({ type, f, capture: opts === true || !!opts?.capture });
  const document = {
    currentScript: script,
    referrer: 'https://search.example/?q=x',
    title: 'Home',
    visibilityState: 'visible',
    readyState: 'complete',
    documentElement: { scrollHeight: 4000 },
    body,
    addEventListener: on(listeners.document),
    removeEventListener() {},
    createTreeWalker: (root) => {
      const it = root.texts();
      return { nextNode: () => it.next().value || null };
    },
  };
  const history = {
    pushState(_s, _t, url) {
      Object.assign(loc, { href: new URL(url, loc).href });
    },
    replaceState(_s, _t, url) {
      Object.assign(loc, { href: new URL(url, loc).href });
    },
  };
  const win = {
    document,
    history,
    location: loc,
    navigator: {
      userAgent: 'TestBrowser/1.0',
      language: 'en-GB',
      globalPrivacyControl: gpc,
      sendBeacon(url, blob) {
        beacons.push({ url, blob });
        return beaconOk;
      },
    },
    screen: { width: 1440, height: 900 },
    scrollY: 0,
    innerHeight: 1000,
    localStorage: ls,
    fetch,
    setTimeout: time.setTimeout,
    clearTimeout: time.clearTimeout,
    setInterval: unbound((f, ms) => intervals.push({ f, ms })),
    addEventListener: on(listeners.window),
    removeEventListener() {},
    performance: {
      now: () => performance.now(),
      getEntriesByType: (t) =>
        t == 'navigation' ? [{ entryType: 'navigation', type: 'navigate', startTime: 0, responseStart: 42, activationStart: 0 }] : [],
    },
    console: { warn: (m) => warnings.push(m), log() {}, error() {} },
    crypto,
    TextEncoder,
    TextDecoder,
    URL,
    Blob,
    CSS: { escape: (s) => s.replace(/[^\w-]/g, (c) => '\\' + c) },
    queueMicrotask,
    Promise,
  };
  win.window = win;
  if (stub) win.overwatch = stub;
  const ctx = vm.createContext(win);
  vm.runInContext(SDK, ctx);
  time.advance(0); // the task after load, where web-vitals reports TTFB

  const fire = (where, type, ev = {}) => {
    const e = { type, ...ev };
    // window capture listeners first, then document, then window bubble: like a real dispatch.
    const order = where == 'window'
      ? listeners.window
      : [...listeners.window.filter((l) => l.capture), ...listeners.document, ...listeners.window.filter((l) => !l.capture)];
    for (const l of order) if (l.type == type) l.f(e);
  };
  return {
    win,
    time,
    fetch,
    warnings,
    beacons,
    intervals,
    body,
    api: () => win.overwatch,
    find: (pred) => {
      const all = (e) => [e, ...e.children.flatMap(all)];
      return all(body).find(pred);
    },
    click: (target, x = 10.4, y = 20.6) => fire('document', 'click', { target, pageX: x, pageY: y }),
    hide: () => {
      document.visibilityState = 'hidden';
      fire('document', 'visibilitychange');
    },
    pagehide: () => fire('window', 'pagehide', { persisted: false }),
    /** Leaving the page: pagehide while visible, then visibilitychange. */
    leave: () => {
      fire('window', 'pagehide', { persisted: false });
      document.visibilityState = 'hidden';
      fire('document', 'visibilitychange');
    },
    popstate: () => fire('window', 'popstate'),
    scroll: (y) => {
      win.scrollY = y;
      fire('window', 'scroll');
    },
    tick: () => intervals.forEach((i) => i.f()),
    /** Events in fetch bodies and beacons, in order. */
    async sent() {
      const fromBeacons = await Promise.all(beacons.map(async (b) => JSON.parse(await b.blob.text()).events));
      return [...fetch.calls.flatMap((c) => c.body.events), ...fromBeacons.flat()];
    },
  };
};

test('auto-init from the script tag: endpoint from its src, pageview on load, flush interval', async () => {
  const p = page({ data: { flushInterval: '250' } });
  assert.deepEqual(p.intervals.map((i) => i.ms), [250]);
  assert.equal(typeof p.api().track, 'function');
  p.tick();
  await settle();
  assert.equal(p.fetch.calls.length, 1);
  const { url, init, body } = p.fetch.calls[0];
  assert.equal(url, 'https://ingest.example:8443/ingest');
  assert.equal(init.headers.Authorization, `Bearer ${TENANT}:pk_test`);
  assert.match(body.sent_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const [pv] = body.events;
  assert.equal(pv.type, 'pageview');
  assert.equal(pv.tenant_id, TENANT);
  assert.equal(pv.url, 'https://site.example/');
  assert.equal(pv.path, '/');
  assert.equal(pv.referrer, 'https://search.example/?q=x');
  assert.equal(pv.title, 'Home');
  assert.equal(pv.user_agent, 'TestBrowser/1.0');
  assert.equal(pv.locale, 'en-GB');
  assert.deepEqual(pv.screen, { width: 1440, height: 900 });
});

test('data-endpoint overrides the origin (trailing slash ignored)', async () => {
  const p = page({ data: { endpoint: 'https://collect.example/' } });
  await p.api().flush();
  assert.equal(p.fetch.calls[0].url, 'https://collect.example/ingest');
});

test('calls queued on the stub array before load are replayed', async () => {
  const stub = [];
  stub.push(['identify', 'u-1'], ['track', 'early', { a: 1 }], ['nonsense', 1]);
  const p = page({ stub });
  p.api().push(['track', 'late'], null, 'junk');
  await p.api().flush();
  const evs = await p.sent();
  assert.deepEqual(evs.map((e) => [e.type, e.name, e.user_id]), [
    ['pageview', undefined, undefined],
    ['custom', 'early', 'u-1'],
    ['custom', 'late', 'u-1'],
  ]);
});

test('without data-tenant/data-key: overwatch.init() starts it', async () => {
  const p = page({ data: { tenant: '' } });
  assert.deepEqual(Object.keys(p.api()), ['init']);
  assert.deepEqual(p.api().init.length, 1);
  const api = p.api().init({ tenant: TENANT, key: 'k2', endpoint: 'https://e.example' });
  assert.equal(p.api(), api);
  await api.flush();
  assert.equal(p.fetch.calls[0].init.headers.Authorization, `Bearer ${TENANT}:k2`);
});

test('clicks: selector, element, text, href, coordinates; never form text; data-ow-ignore', async () => {
  const p = page();
  const span = p.find((e) => e.localName == 'span');
  p.click(span);
  p.click(p.find((e) => e.localName == 'b'), -3, 5);
  p.click(p.find((e) => e.localName == 'textarea'));
  p.click(p.find((e) => e.localName == 'form'));
  p.click(p.find((e) => 'contenteditable' in e.attrs));
  p.click(p.find((e) => e.localName == 'option'));
  p.click(p.find((e) => e.localName == 'label'));
  p.click(p.find((e) => e.id == 'ignored'));
  p.click(p.find((e) => e.localName == 'ul'));
  await p.api().flush();
  const clicks = (await p.sent()).filter((e) => e.type == 'click');
  assert.deepEqual(
    clicks.map(({ selector, element, text, href, x, y }) => ({ selector, element, text, href, x, y })),
    [
      { selector: '#app > ul.nav.main > li:nth-of-type(1) > a', element: 'a', text: 'Read the docs', href: 'https://site.example/docs?x=1', x: 10, y: 21 },
      { selector: '#app > button.buy', element: 'button', text: 'Buy now', href: undefined, x: 0, y: 5 },
      { selector: '#app > form > textarea', element: 'textarea', text: undefined, href: undefined, x: 10, y: 21 },
      { selector: '#app > form', element: 'form', text: undefined, href: undefined, x: 10, y: 21 },
      { selector: '#app > form > div', element: 'div', text: undefined, href: undefined, x: 10, y: 21 },
      { selector: '#app > label > select', element: 'select', text: undefined, href: undefined, x: 10, y: 21 },
      { selector: '#app > label', element: 'label', text: undefined, href: undefined, x: 10, y: 21 },
      { selector: '#app > ul.nav.main', element: 'ul', text: 'Read the docs B', href: undefined, x: 10, y: 21 },
    ],
  );
});

test('SPA navigation: scroll of the page left, then a pageview with the previous URL as referrer', async () => {
  const p = page();
  p.scroll(1000); // (1000 + 1000) / 4000
  p.win.history.pushState({}, '', '/b?x=1');
  p.win.scrollY = 0; // the router scrolls to the top
  p.win.history.replaceState({}, '', '/b?x=2'); // same path: nothing
  p.win.history.pushState({}, '', '/b?x=2#top'); // same path: nothing
  p.win.location.href = 'https://site.example/c';
  p.popstate();
  await p.api().flush();
  const evs = await p.sent();
  assert.deepEqual(
    evs.map((e) => [e.type, e.path, e.url, e.referrer, e.depth_pct]),
    [
      ['pageview', '/', 'https://site.example/', 'https://search.example/?q=x', undefined],
      ['scroll', '/', 'https://site.example/', 'https://search.example/?q=x', 50],
      ['pageview', '/b', 'https://site.example/b?x=1', 'https://site.example/', undefined],
      ['scroll', '/b', 'https://site.example/b?x=2#top', 'https://site.example/', 25],
      ['pageview', '/c', 'https://site.example/c', 'https://site.example/b?x=2#top', undefined],
    ],
  );
});

test('hide: one scroll per pageview and one performance event per load, beaconed; later hides beacon the rest', async () => {
  const p = page();
  p.scroll(3000);
  p.hide();
  p.pagehide(); // the same departure: nothing new
  p.win.document.visibilityState = 'visible';
  p.api().track('back');
  p.hide();
  assert.equal(p.fetch.calls.length, 0);
  assert.equal(p.beacons.length, 2);
  const url = new URL(p.beacons[0].url);
  assert.equal(url.origin + url.pathname, 'https://ingest.example:8443/ingest');
  assert.equal(url.searchParams.get('key'), `${TENANT}:pk_test`);
  assert.equal(p.beacons[0].blob.type, 'text/plain');
  const evs = await p.sent();
  assert.deepEqual(evs.map((e) => e.type), ['pageview', 'scroll', 'performance', 'custom']);
  assert.equal(evs[1].depth_pct, 100);
  assert.equal(evs[2].ttfb, 42);
  assert.equal(Object.keys(evs[2]).filter((k) => ['lcp', 'fcp', 'inp', 'cls', 'ttfb'].includes(k)).length, 1, 'only known metrics');
  const s = p.api().stats();
  assert.deepEqual([s.captured, s.sent, s.dropped, s.retries], [4, 4, 0, 0]);
  assert.ok(s.mainThreadMs > 0);
});

test('leaving: pagehide (still visible) beacons the queue and scroll; performance follows at visibilitychange', async () => {
  const p = page();
  p.leave();
  assert.equal(p.beacons.length, 2);
  const [first, second] = await Promise.all(p.beacons.map(async (b) => JSON.parse(await b.blob.text()).events));
  assert.deepEqual(first.map((e) => e.type), ['pageview', 'scroll']);
  assert.deepEqual(second.map((e) => e.type), ['performance']);
});

test('a refused beacon falls back to a keepalive fetch', async () => {
  const p = page({ beaconOk: false });
  p.hide();
  assert.equal(p.fetch.calls.length, 1);
  assert.equal(p.fetch.calls[0].init.keepalive, true);
  assert.deepEqual(p.fetch.calls[0].body.events.map((e) => e.type), ['pageview', 'scroll', 'performance']);
  await settle();
  await settle();
  assert.equal(p.api().stats().sent, 3);
});

test('data-respect-gpc with Global Privacy Control on: nothing captured or sent', async () => {
  const p = page({ data: { respectGpc: '' }, gpc: true });
  p.api().track('x');
  p.click(p.find((e) => e.localName == 'button'));
  p.hide();
  p.tick();
  await p.api().flush();
  assert.equal(p.fetch.calls.length + p.beacons.length, 0);
  assert.equal(p.api().stats().captured, 0);
  // Without the attribute the signal is not consulted.
  const q = page({ gpc: true });
  await q.api().flush();
  assert.equal(q.fetch.calls.length, 1);
});

test('opt-out survives a reload', async () => {
  const ls = fakeStorage();
  const p = page({ ls });
  p.api().optOut();
  p.api().track('x');
  p.hide();
  const q = page({ ls });
  q.hide();
  await q.api().flush();
  assert.equal(p.fetch.calls.length + p.beacons.length + q.fetch.calls.length + q.beacons.length, 0);
});

test('undelivered events are sent by the next page load', async () => {
  const ls = fakeStorage();
  const p = page({ ls, fetch: fakeFetch([new TypeError('offline')]), beaconOk: false });
  p.api().track('kept');
  await p.api().flush();
  p.leave(); // keepalive fetches fail too; the queue is written at once
  await settle();
  const q = page({ ls });
  await q.api().flush();
  const evs = await q.sent();
  assert.deepEqual(evs.map((e) => e.name || e.type), ['pageview', 'kept', 'scroll', 'performance', 'pageview']);
});
