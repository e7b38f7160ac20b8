// Retry delays: exponential backoff with full jitter, Retry-After as a floor.

export const BASE_MS = 1000;
export const CAP_MS = 60e3;

/**
 * Delay before retry number `attempt` (0 for the first retry):
 * uniform in [0, min(CAP, BASE * 2^attempt)), but at least Retry-After seconds.
 * @param {number} attempt
 * @param {() => number} random  uniform in [0, 1)
 * @param {number} [retryAfterS]  the Retry-After header in seconds (NaN if absent)
 */
export const backoff = (attempt, random, retryAfterS) =>
  Math.max(random() * Math.min(CAP_MS, BASE_MS * 2 ** attempt), retryAfterS * 1000 || 0);
