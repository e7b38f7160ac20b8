import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BASE_MS, CAP_MS, backoff } from '../src/backoff.js';

test('backoff grows ×2 from 1 s with full jitter, capped at 60 s', () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(CAP_MS, BASE_MS * 2 ** attempt);
    assert.equal(backoff(attempt, () => 0, NaN), 0);
    assert.equal(backoff(attempt, () => 0.5, NaN), ceiling / 2);
    assert.ok(backoff(attempt, () => 0.999999, NaN) < ceiling);
  }
  assert.equal(backoff(0, () => 0.999999, NaN) < 1000, true);
  assert.equal(backoff(1, () => 0.5, NaN), 1000);
  assert.equal(backoff(20, () => 0.5, NaN), 30e3);
  for (let i = 0; i < 1000; i++) {
    const d = backoff(3, Math.random, NaN);
    assert.ok(d >= 0 && d < 8000);
  }
});

test('Retry-After (seconds) is a floor', () => {
  assert.equal(backoff(0, () => 0.5, 30), 30e3);
  assert.equal(backoff(0, () => 0, 1), 1000);
  assert.equal(backoff(10, () => 0.5, 1), 30e3); // jitter above the floor wins
  assert.equal(backoff(0, () => 0.5, NaN), 500); // absent header
});
