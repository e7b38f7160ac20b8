// Fakes for the DOM-free modules: storage, clock, timers, network.
import { createStore } from '../src/store.js';

/** A localStorage stand-in over a Map; `broken: true` makes every call throw. */
export const fakeStorage = ({ broken = false } = {}) => {
  const m = new Map();
  const check = () => {
    if (broken) throw new Error('SecurityError');
  };
  return {
    map: m,
    getItem: (k) => (check(), m.has(k) ? m.get(k) : null),
    setItem: (k, v) => (check(), m.set(k, String(v))),
    removeItem: (k) => (check(), m.delete(k)),
  };
};

/**
 * Like window functions, which throw "Illegal invocation" when called as a
 * method of another object (env.fetch(...)): the SDK must call them unbound.
 */
export const unbound = (f) =>
  function (...a) {
    if (this !== undefined && this !== globalThis) throw new TypeError('Illegal invocation');
    return f(...a);
  };

/** Manual clock and timers: advance(ms) runs what falls due, in order. */
export const fakeTime = (start = Date.UTC(2026, 0, 1)) => {
  let now = start;
  let seq = 0;
  /** @type {Map<number, {at: number, f: () => void, ms: number}>} */
  const timers = new Map();
  const t = {
    now: () => now,
    timers,
    setTimeout: unbound((f, ms = 0) => (timers.set(++seq, { at: now + ms, f, ms }), seq)),
    clearTimeout: unbound((id) => timers.delete(id)),
    /** Delays of the pending timers. */
    pending: () => [...timers.values()].map((x) => x.ms),
    advance(ms) {
      const end = now + ms;
      for (;;) {
        const next = [...timers.entries()].sort((a, b) => a[1].at - b[1].at)[0];
        if (!next || next[1].at > end) break;
        timers.delete(next[0]);
        now = next[1].at;
        next[1].f();
      }
      now = end;
    },
  };
  return t;
};

/** A Response stand-in. */
export const response = (status, body = {}, headers = {}) => ({
  status,
  headers: { get: (k) => headers[k.toLowerCase()] ?? null },
  json: async () => (typeof body == 'string' ? JSON.parse(body) : body),
});

/**
 * A fetch that records requests and answers from `answers` (a function of the
 * request number, or a list; the last entry repeats). An Error answer rejects.
 */
export const fakeFetch = (answers = [response(200, { status: 'success' })]) => {
  const calls = [];
  let inFlight = 0;
  let maxInFlight = 0;
  /** @type {(() => void)[]} */
  const gates = [];
  const f = unbound(async (url, init) => {
    const n = calls.length;
    calls.push({ url, init, body: JSON.parse(init.body) });
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      if (f.hold) await new Promise((r) => gates.push(r));
      await null;
      const a = typeof answers == 'function' ? answers(n) : answers[Math.min(n, answers.length - 1)];
      if (a instanceof Error) throw a;
      return a;
    } finally {
      inFlight--;
    }
  });
  f.calls = calls;
  f.hold = false;
  f.release = () => gates.splice(0).forEach((r) => r());
  f.maxInFlight = () => maxInFlight;
  return f;
};

/** Lets pending promise callbacks run. */
export const settle = () => new Promise((r) => setImmediate(r));

export const TENANT = '00000000-0000-0000-0000-000000000000';

/** Everything createClient needs, faked. */
export const fakeEnv = ({ ls = fakeStorage(), time = fakeTime(), fetch = fakeFetch(), beacon = () => true } = {}) => {
  const warnings = [];
  const beacons = [];
  return {
    ls,
    time,
    warnings,
    beacons,
    env: {
      store: createStore(ls),
      fetch,
      beacon: (url, body) => {
        const ok = beacon(url, body);
        beacons.push({ url, body: JSON.parse(body), ok });
        return ok;
      },
      setTimeout: time.setTimeout,
      clearTimeout: time.clearTimeout,
      now: time.now,
      random: () => 0.5,
      warn: (m) => warnings.push(m),
      ctx: () => ({ url: 'https://site.example/a', path: '/a', title: 'A', screen: { width: 1280, height: 800 } }),
    },
  };
};
