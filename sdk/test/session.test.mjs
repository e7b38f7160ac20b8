import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SESSION_MS, sessionId } from '../src/session.js';
import { createStore } from '../src/store.js';
import { fakeStorage, fakeTime } from './fakes.mjs';

test('a session is kept while active and renewed after 30 minutes without activity', () => {
  const store = createStore(fakeStorage());
  const time = fakeTime();
  const a = sessionId(store, 's', time.now);
  assert.match(a, /^[0-9a-f-]{36}$/);
  // Activity every 29 minutes keeps it, well past 30 minutes in total.
  for (let i = 0; i < 4; i++) {
    time.advance(SESSION_MS - 60e3);
    assert.equal(sessionId(store, 's', time.now), a);
  }
  time.advance(SESSION_MS + 1);
  const b = sessionId(store, 's', time.now);
  assert.notEqual(b, a);
  assert.equal(sessionId(store, 's', time.now), b);
});

test('the session survives a reload (same storage) and a corrupt value is replaced', () => {
  const ls = fakeStorage();
  const time = fakeTime();
  const a = sessionId(createStore(ls), 's', time.now);
  time.advance(60e3);
  assert.equal(sessionId(createStore(ls), 's', time.now), a);
  ls.setItem('s', 'garbage');
  assert.notEqual(sessionId(createStore(ls), 's', time.now), a);
});
