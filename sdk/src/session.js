// Sessions: a UUID kept in storage, renewed after 30 minutes without activity.
import { uuid } from './util.js';

export const SESSION_MS = 30 * 60e3;

/**
 * Returns the current session id and records `now()` as activity.
 * Stored as "<uuid> <last activity ms>", rewritten at most once a second.
 * @param {import('./store.js').Store} store
 * @param {string} key
 * @param {() => number} now
 */
export const sessionId = (store, key, now) => {
  let [id, last] = (store.get(key) || '').split(' ');
  const t = now();
  if (!id || !(t - last < SESSION_MS)) id = uuid(), (last = 0);
  if (t - last >= 1000) store.set(key, id + ' ' + t);
  return id;
};
