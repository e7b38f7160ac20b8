import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bytes, cut, uuid, uuidFallback } from '../src/util.js';
import { createStore } from '../src/store.js';
import { fakeStorage } from './fakes.mjs';

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('uuid is v4, with and without crypto.randomUUID', () => {
  assert.match(uuid(), V4);
  const seen = new Set();
  for (let i = 0; i < 1000; i++) {
    const u = uuidFallback();
    assert.match(u, V4);
    seen.add(u);
  }
  assert.equal(seen.size, 1000);
});

test('cut keeps strings within a UTF-8 byte budget without splitting characters', () => {
  assert.equal(cut('abc', 1024), 'abc');
  assert.equal(cut('', 10), undefined);
  assert.equal(cut(null, 10), undefined);
  assert.equal(cut(undefined, 10), undefined);
  assert.equal(cut(42, 10), '42');
  assert.equal(cut('a'.repeat(5000), 4096).length, 4096);
  for (const ch of ['é', '€', '😀']) {
    for (let max = 1; max < 20; max++) {
      const s = cut(ch.repeat(50), max);
      const n = s === undefined ? 0 : bytes(s);
      assert.ok(n <= max && n > max - bytes(ch), `${ch} ${max}: ${n}`);
      assert.ok(!s || !s.includes('\uFFFD'));
    }
  }
});

test('store falls back to memory when localStorage throws or is missing', () => {
  for (const ls of [fakeStorage({ broken: true }), undefined]) {
    const s = createStore(ls);
    assert.equal(s.get('k'), undefined);
    s.set('k', 'v');
    assert.equal(s.get('k'), 'v');
    s.set('k', null);
    assert.equal(s.get('k'), undefined);
  }
});

test('store: a failed write does not leave an older value shadowing the new one', () => {
  const ls = fakeStorage();
  const s = createStore(ls);
  s.set('k', 'old');
  ls.setItem = () => {
    throw new Error('QuotaExceededError');
  };
  s.set('k', 'new');
  assert.equal(s.get('k'), 'new');
});
