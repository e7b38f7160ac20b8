// The client: builds events, queues them, exposes the public API. No DOM:
// the page context, storage, clock, timers and network come in through `env`.
import { createQueue } from './queue.js';
import { createSender } from './sender.js';
import { sessionId } from './session.js';
import { createStore } from './store.js';
import { bytes, cut, uuid } from './util.js';

export const FLUSH_AT = 50;
export const MAX_EVENT_BYTES = 32768;
export const MAX_PROPERTIES_BYTES = 16384;

/**
 * @typedef {{
 *   track(name: string, properties?: Record<string, unknown>): void,
 *   identify(userId?: string | null): void,
 *   page(): void,
 *   flush(): Promise<void>,
 *   optOut(): void,
 *   optIn(): void,
 *   stats(): import('./queue.js').Stats,
 * }} Api
 * @typedef {import('./sender.js').SenderEnv & {
 *   store: import('./store.js').Store,
 *   ctx: () => Record<string, unknown>,
 * }} ClientEnv
 */

/**
 * @param {{tenant: string, key: string, endpoint: string, off?: unknown}} cfg
 *   `off`: capture and send nothing (Global Privacy Control), storage untouched.
 * @param {ClientEnv} env
 */
export const createClient = (cfg, env) => {
  const { now, warn } = env;
  // Off: storage is not even read (what an earlier page left stays there).
  const store = cfg.off ? createStore() : env.store;
  const k = (/** @type {string} */ name) => `ow:${cfg.tenant}:${name}`;
  /** @type {import('./queue.js').Stats} */
  const stats = { captured: 0, sent: 0, dropped: 0, retries: 0, mainThreadMs: 0 };
  let depth = 0;
  /**
   * Guards an entry point: never throws into the page, and adds its
   * synchronous time to stats.mainThreadMs (nested calls count once).
   * @template {(...a: any[]) => any} F
   * @param {F} f
   * @returns {F}
   */
  const g = (f) =>
    /** @type {F} */ (
      (...a) => {
        const t = performance.now();
        depth++;
        try {
          return f(...a);
        } catch {
        } finally {
          if (!--depth) stats.mainThreadMs += performance.now() - t;
        }
      }
    );
  // Window functions must be called unbound: env.setTimeout() is an Illegal invocation.
  const { setTimeout } = env;
  const timers = { ...env, setTimeout: (f, ms) => setTimeout(g(f), ms) };
  const queue = createQueue(store, k('q'), stats, timers);
  const sender = createSender(cfg, queue, stats, timers);
  let user = store.get(k('u'));
  let out = cfg.off || store.get(k('off'));
  // Opted out (maybe in another tab since it queued these): send none of them.
  if (out) queue.clear();
  /** @type {Set<string>} */
  const warned = new Set();
  const warnOnce = (/** @type {string} */ m) => warned.has(m) || (warned.add(m), warn(m));

  /**
   * Captures one event: common fields from env.ctx(), then `fields`.
   * @param {string} type
   * @param {Record<string, unknown>} [fields]
   */
  const capture = g((type, fields) => {
    if (out) return;
    const s = JSON.stringify({
      id: uuid(),
      tenant_id: cfg.tenant,
      session_id: sessionId(store, k('s'), now),
      timestamp: new Date(now()).toISOString(),
      type,
      ...env.ctx(),
      user_id: user,
      ...fields,
    });
    stats.captured++;
    if (bytes(s) > MAX_EVENT_BYTES) {
      stats.dropped++;
      return warnOnce('[overwatch] event over 32 KB dropped');
    }
    queue.push(s);
    if (queue.items.length >= FLUSH_AT) sender.tick();
  });

  /** @type {Api} */
  const api = {
    track: g((name, properties) => {
      name = cut(name, 1024);
      if (!name?.trim()) return warnOnce('[overwatch] track(): no name');
      if (properties != null) {
        let json;
        try {
          json = JSON.stringify(properties);
        } catch {} // cycles, BigInt
        if (json?.[0] != '{' || bytes(json) > MAX_PROPERTIES_BYTES) {
          warnOnce('[overwatch] track(): properties dropped (not a JSON object, or over 16 KB)');
          properties = undefined;
        }
      }
      capture('custom', { name, properties });
    }),
    identify: g((id) => {
      user = cut(id, 1024);
      store.set(k('u'), user);
    }),
    page: g(() => capture('pageview')),
    flush: g(() => sender.flush()),
    optOut: g(() => {
      out = 1;
      store.set(k('off'), '1');
      queue.clear();
    }),
    optIn: g(() => {
      out = cfg.off;
      store.set(k('off'));
    }),
    stats: () => ({ ...stats }),
  };
  return { api, capture, g, tick: g(sender.tick), hide: g(sender.hide) };
};
