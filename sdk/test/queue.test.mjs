import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SAVE_DELAY_MS, createQueue } from '../src/queue.js';
import { createStore } from '../src/store.js';
import { fakeStorage, fakeTime } from './fakes.mjs';

const stats = () => ({ captured: 0, sent: 0, dropped: 0, retries: 0, mainThreadMs: 0 });
const ev = (i) => JSON.stringify({ id: `id-${i}`, type: 'custom', name: 'n' });

test('the bound drops the oldest events and counts them', () => {
  const st = stats();
  const time = fakeTime();
  const q = createQueue(createStore(fakeStorage()), 'q', st, time, 1000);
  for (let i = 0; i < 1005; i++) q.push(ev(i));
  assert.equal(q.items.length, 1000);
  assert.equal(st.dropped, 5);
  assert.equal(JSON.parse(q.items[0]).id, 'id-5');
  assert.equal(JSON.parse(q.items[999]).id, 'id-1004');
});

test('the queue survives a reload through storage, writes coalesced', () => {
  const ls = fakeStorage();
  const time = fakeTime();
  const q = createQueue(createStore(ls), 'q', stats(), time);
  for (let i = 0; i < 10; i++) q.push(ev(i));
  assert.equal(ls.getItem('q'), null, 'not written synchronously');
  assert.deepEqual(time.pending(), [SAVE_DELAY_MS], 'one write scheduled for all pushes');
  time.advance(SAVE_DELAY_MS);
  const again = createQueue(createStore(ls), 'q', stats(), fakeTime());
  assert.deepEqual(again.items, q.items);
  // save() writes at once; an empty queue removes the key.
  q.remove(q.items);
  q.save();
  assert.equal(ls.getItem('q'), null);
});

test('a reload applies the bound and skips corrupt storage', () => {
  const ls = fakeStorage();
  ls.setItem('q', JSON.stringify([{ id: 'a' }, null, 5, { no: 'id' }, { id: 'b' }]));
  assert.deepEqual(
    createQueue(createStore(ls), 'q', stats(), fakeTime()).items.map((s) => JSON.parse(s).id),
    ['a', 'b'],
  );
  ls.setItem('q', JSON.stringify(Array.from({ length: 20 }, (_, i) => ({ id: i + 1 }))));
  assert.equal(createQueue(createStore(ls), 'q', stats(), fakeTime(), 5).items.length, 5);
  ls.setItem('q', '{not json');
  assert.deepEqual(createQueue(createStore(ls), 'q', stats(), fakeTime()).items, []);
});

test('the queue works in memory when storage throws', () => {
  const time = fakeTime();
  const q = createQueue(createStore(fakeStorage({ broken: true })), 'q', stats(), time);
  q.push(ev(1));
  time.advance(SAVE_DELAY_MS);
  assert.equal(q.items.length, 1);
});

test('take bounds count and bytes; remove reports what was still queued', () => {
  const q = createQueue(createStore(fakeStorage()), 'q', stats(), fakeTime());
  for (let i = 0; i < 150; i++) q.push(ev(i));
  assert.equal(q.take(100, 1e9).length, 100);
  const one = ev(0).length + 1;
  assert.equal(q.take(100, one * 10).length, 10);
  assert.equal(q.take(100, 1).length, 1, 'an event is taken even if alone over the byte bound');
  const batch = q.take(100, 1e9);
  assert.equal(q.remove(batch), 100);
  assert.equal(q.remove(batch), 0);
  assert.equal(q.items.length, 50);
});
