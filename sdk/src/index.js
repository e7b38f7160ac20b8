// The browser SDK: init() wires the client to the page (storage, network,
// timers) and captures pageviews (SPA included), clicks, scroll depth and web
// vitals. Module entry for bundlers; auto.js is the <script> entry.
import { onCLS, onFCP, onINP, onLCP, onTTFB } from 'web-vitals';
import { createClient } from './client.js';
import { clickText, selector } from './dom.js';
import { createStore } from './store.js';
import { cut } from './util.js';

/**
 * Starts the SDK on this page.
 * @param {{
 *   tenant: string,
 *   key: string,
 *   endpoint: string,
 *   respectGpc?: boolean,
 *   flushIntervalMs?: number,
 * }} o  endpoint: the engine's origin, e.g. "https://ingest.example.com"
 * @returns {import('./client.js').Api}
 */
export const init = (o) => {
  let ls;
  try {
    ls = localStorage;
  } catch {}
  const off = o.respectGpc && navigator.globalPrivacyControl === true;
  let ref = document.referrer;
  let path = location.pathname;
  let last = location.href;
  let bottom = 0; // deepest scrollY + innerHeight seen on this pageview
  let scrolled = 0; // the pageview's scroll event is out
  let perf = 0; // the document's performance event is out
  /** @type {Record<string, number>} */
  const vitals = {};

  const { api, capture, g, tick, hide } = createClient(
    { ...o, endpoint: (o.endpoint || '').replace(/\/+$/, ''), off },
    {
      store: createStore(ls),
      // Called unbound, which window functions allow.
      fetch,
      setTimeout,
      clearTimeout,
      now: Date.now,
      random: Math.random,
      beacon: (u, b) => navigator.sendBeacon?.(u, new Blob([b], { type: 'text/plain' })),
      warn: (m) => console.warn(m),
      ctx: () => ({
        url: cut(location.href, 4096),
        path: cut(location.pathname, 1024),
        referrer: cut(ref, 4096),
        title: cut(document.title, 1024),
        user_agent: cut(navigator.userAgent, 1024),
        locale: cut(navigator.language, 35),
        screen: { width: screen.width, height: screen.height },
      }),
    },
  );
  if (off) return api;

  const px = (v) => Math.max(0, Math.round(v)) || 0;
  const reach = () => (bottom = Math.max(bottom, scrollY + innerHeight));

  /** The pageview's one scroll event, `over` naming the page left on SPA navigation. */
  const scroll = (over) => {
    if (scrolled) return;
    scrolled = 1;
    const h = document.documentElement.scrollHeight;
    reach();
    capture('scroll', { depth_pct: h ? Math.min(100, Math.round((bottom / h) * 100)) : 100, ...over });
  };

  const pageview = () => {
    bottom = scrolled = 0;
    capture('pageview');
  };

  // SPA navigation: a new pageview when the path changed (not the query or hash).
  const nav = g(() => {
    const prev = last;
    last = location.href;
    if (location.pathname != path) {
      scroll({ url: cut(prev, 4096), path: cut(path, 1024) });
      path = location.pathname;
      ref = prev;
      pageview();
    }
  });
  for (const m of ['pushState', 'replaceState']) {
    const orig = history[m];
    history[m] = function (...a) {
      const r = orig.apply(this, a);
      nav();
      return r;
    };
  }
  addEventListener('popstate', nav);
  // Back/forward cache restore: the page is shown again.
  addEventListener('pageshow', g((e) => e.persisted && pageview()));

  document.addEventListener(
    'click',
    g((e) => {
      let t = e.target;
      if (!t?.closest || t.closest('[data-ow-ignore]')) return;
      t = t.closest('a,button,[role=button],[role=link],input,select,textarea,label,summary') || t;
      const a = t.closest('a[href]');
      capture('click', {
        selector: selector(t),
        element: t.localName,
        text: clickText(t),
        href: cut(a?.href?.baseVal ?? a?.href, 4096),
        x: px(e.pageX),
        y: px(e.pageY),
      });
    }),
    true,
  );
  addEventListener('scroll', g(reach), { passive: true });

  // web-vitals reports each metric as it changes; the latest value wins.
  for (const on of [onLCP, onINP, onCLS, onFCP, onTTFB])
    on(
      g((m) => {
        if (m.value >= 0 && m.value < 36e5) vitals[m.name.toLowerCase()] = m.value;
      }),
      { reportAllChanges: true },
    );

  // Hidden or leaving: the pageview's scroll event, then everything queued is
  // beaconed. The performance event waits for the document to be hidden:
  // web-vitals finalizes LCP, CLS and INP in visibilitychange listeners on
  // window in the capture phase, and this listener is on document in the
  // bubble phase, so it runs after them. Leaving a page fires pagehide first,
  // while still visible, then visibilitychange (HTML "unload a document").
  const hidden = g((e) => {
    const gone = document.visibilityState == 'hidden';
    if (gone || e.type == 'pagehide') {
      scroll();
      if (gone && !perf && Object.keys(vitals).length) {
        perf = 1;
        capture('performance', vitals);
      }
      hide();
    }
  });
  document.addEventListener('visibilitychange', hidden);
  addEventListener('pagehide', hidden);

  setInterval(tick, o.flushIntervalMs || 5e3);
  pageview();
  return api;
};
