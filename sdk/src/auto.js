// The <script> entry, built into dist/sdk.js:
//   <script defer src="https://INGEST_HOST/sdk.js" data-tenant="…" data-key="…"></script>
// Sets window.overwatch. Calls queued before load on a stub array
//   window.overwatch = window.overwatch || []; overwatch.push(['track', 'x', {}]);
// are replayed, and overwatch.push([...]) keeps working afterwards.
import { init } from './index.js';

const w = /** @type {any} */ (window);
const queued = w.overwatch;

/** @param {import('./client.js').Api & {push?: (...calls: any[][]) => void}} api */
const start = (api) => {
  api.push = (...calls) => {
    for (const c of calls)
      try {
        api[c[0]](...c.slice(1));
      } catch {}
  };
  api.push(...(queued || []));
  return (w.overwatch = api);
};

// Loaded twice: keep the first.
if (!queued || Array.isArray(queued)) {
  try {
    const s = /** @type {HTMLScriptElement} */ (document.currentScript);
    const d = s.dataset;
    if (d.tenant && d.key)
      start(
        init({
          ...d,
          endpoint: d.endpoint || new URL(s.src).origin,
          respectGpc: 'respectGpc' in d,
          flushIntervalMs: +d.flushInterval || 5e3,
        }),
      );
    else throw 0;
  } catch {
    // No settings on the script tag: overwatch.init({tenant, key, endpoint, ...}).
    w.overwatch = { init: (o) => start(init(o)) };
  }
}
