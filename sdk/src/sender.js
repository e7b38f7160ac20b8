// Delivery: batches to POST /ingest, one fetch in flight, retries with backoff,
// sendBeacon when the page is hidden. No DOM; everything is injected.
import { backoff } from './backoff.js';

export const BATCH_EVENTS = 100;
export const BATCH_BYTES = 512e3;
export const BEACON_BYTES = 60e3;

/**
 * @typedef {{status: number, headers: {get(name: string): string | null}, json(): Promise<any>}} ResponseLike
 * @typedef {{
 *   fetch: (url: string, init: object) => Promise<ResponseLike>,
 *   beacon: (url: string, body: string) => boolean,
 *   setTimeout: (f: () => void, ms: number) => unknown,
 *   clearTimeout: (t: unknown) => void,
 *   now: () => number,
 *   random: () => number,
 *   warn: (msg: string) => void,
 * }} SenderEnv
 */

/**
 * @param {{endpoint: string, tenant: string, key: string}} cfg
 * @param {import('./queue.js').Queue} queue
 * @param {import('./queue.js').Stats} stats
 * @param {SenderEnv} env  functions are called unbound (fetch, setTimeout work so)
 */
export const createSender = ({ endpoint, tenant, key }, queue, stats, env) => {
  const { fetch, beacon, setTimeout, clearTimeout, now, random, warn } = env;
  const url = endpoint + '/ingest';
  const creds = tenant + ':' + key;
  /** @type {Promise<void> | 0} */
  let busy = 0;
  let attempt = 0;
  let retryAt = 0;
  let timer;

  const body = (/** @type {string[]} */ batch) =>
    `{"sent_at":"${new Date(now()).toISOString()}","events":[${batch}]}`;

  const post = (/** @type {string[]} */ batch, keepalive = false) =>
    fetch(url, {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + creds, 'Content-Type': 'application/json' },
      body: body(batch),
      credentials: 'omit',
      keepalive,
    });

  /**
   * Settles a batch from its fetch. Delivered (2xx) or refused (4xx other than
   * 408 and 429): removed from the queue, true. Otherwise (network error, 408,
   * 429, 5xx, anything else) the events stay queued and the Response (or
   * undefined) comes back for the retry.
   */
  const settle = async (/** @type {Promise<ResponseLike>} */ p, /** @type {string[]} */ batch) => {
    let res, s = 0;
    try {
      res = await p;
      s = res.status;
    } catch {}
    const ok = s > 199 && s < 300;
    if (!ok && (s < 400 || s > 499 || s == 408 || s == 429)) return res;
    // Counted only if still queued: a beacon may have taken them meanwhile.
    const n = queue.remove(batch);
    const j = (await res.json().catch(() => 0)) || {};
    const errs = j.errors || [];
    // Per-event rejections (also what a 400 "every event rejected" carries).
    const reasons = [...new Set(errs.map((e) => e.reason + (e.field ? ` (${e.field})` : '')))].join(', ');
    if (ok) {
      const bad = Math.min(n, errs.length);
      stats.sent += n - bad;
      stats.dropped += bad;
      if (errs.length) warn(`[overwatch] ${errs.length} event(s) rejected: ` + reasons);
    } else {
      stats.dropped += n;
      warn(`[overwatch] batch dropped (${s}${j.error ? ' ' + j.error : ''}): ${j.message || reasons}`);
    }
    return true;
  };

  /** Sends until the queue is empty or a batch must wait for a retry. */
  const run = async () => {
    clearTimeout(timer);
    while (queue.items.length) {
      const batch = queue.take(BATCH_EVENTS, BATCH_BYTES);
      const res = await settle(post(batch), batch);
      if (res !== true) {
        stats.retries++;
        const d = backoff(attempt++, random, parseFloat(res?.headers.get('Retry-After')));
        retryAt = now() + d;
        timer = setTimeout(flush, d);
        return;
      }
      attempt = retryAt = 0;
    }
  };

  /**
   * Sends now, ignoring any backoff wait. Resolves (never rejects) when the
   * queue is empty or a retry is scheduled; while a send is in flight, after it.
   * @returns {Promise<void>}
   */
  const flush = () =>
    busy
      ? busy.then(flush)
      : (busy = run()
          .catch(() => {})
          .then(() => {
            busy = 0;
          }));

  return {
    flush,
    /** Automatic send (interval, size bound): skipped while in flight or backing off. */
    tick() {
      if (queue.items.length && !busy && now() >= retryAt) flush();
    },
    /**
     * The page is being hidden: hand everything queued (in-flight events too;
     * the sink drops duplicates) to sendBeacon in bodies under BEACON_BYTES,
     * or to a keepalive fetch where the browser refuses the beacon.
     */
    hide() {
      const u = url + '?key=' + encodeURIComponent(creds);
      let rest = queue.items;
      while (rest.length) {
        const chunk = queue.take(BATCH_EVENTS, BEACON_BYTES - 100, rest);
        rest = rest.slice(chunk.length);
        if (beacon(u, body(chunk))) stats.sent += queue.remove(chunk);
        else settle(post(chunk, true), chunk);
      }
      queue.save();
    },
  };
};
