// The event queue: serialized events in memory, mirrored to storage, bounded.
import { bytes } from './util.js';

export const MAX_QUEUE = 1000;
export const SAVE_DELAY_MS = 1000;

/**
 * @typedef {{captured: number, sent: number, dropped: number, retries: number, mainThreadMs: number}} Stats
 * @typedef {ReturnType<typeof createQueue>} Queue
 */

/**
 * Items are events as JSON text, oldest first. Loading restores what an earlier
 * page left in storage. Writes to storage are coalesced (at most one per
 * SAVE_DELAY_MS) because a full queue is large; call save() to write now.
 * @param {import('./store.js').Store} store
 * @param {string} key
 * @param {Stats} stats  `dropped` counts events pushed out by the bound
 * @param {{setTimeout: (f: () => void, ms: number) => unknown}} env
 * @param {number} [max]
 */
export const createQueue = (store, key, stats, { setTimeout }, max = MAX_QUEUE) => {
  /** @type {string[]} */
  let items = [];
  let timer;
  try {
    items = JSON.parse(store.get(key) || '[]')
      .filter((e) => e && e.id)
      .map((e) => JSON.stringify(e))
      .slice(-max);
  } catch {}

  const q = {
    get items() {
      return items;
    },
    /** Adds an event; drops the oldest beyond the bound. */
    push(/** @type {string} */ s) {
      const over = items.push(s) - max;
      if (over > 0) {
        items.splice(0, over);
        stats.dropped += over;
      }
      q.touch();
    },
    /**
     * The oldest events, at most n of them and (beyond the first) at most
     * maxBytes of JSON including separators.
     */
    take(/** @type {number} */ n, /** @type {number} */ maxBytes, list = items) {
      const out = [];
      let size = 0;
      for (const s of list) {
        size += bytes(s) + 1;
        if (out.length >= n || (out.length && size > maxBytes)) break;
        out.push(s);
      }
      return out;
    },
    /**
     * Removes the given events (delivered, refused or beaconed); returns how
     * many were still queued, so nothing is counted twice.
     */
    remove(/** @type {string[]} */ batch) {
      const gone = new Set(batch);
      const n = items.length;
      items = items.filter((s) => !gone.has(s));
      q.touch();
      return n - items.length;
    },
    clear() {
      items = [];
      q.save();
    },
    /** Schedules a write to storage. */
    touch() {
      timer ||= setTimeout(q.save, SAVE_DELAY_MS);
    },
    /** Writes to storage now. */
    save() {
      timer = 0;
      store.set(key, items.length ? '[' + items + ']' : null);
    },
  };
  return q;
};
