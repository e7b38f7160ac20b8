// String storage over localStorage that never throws: when localStorage is
// missing, throws (Safari private mode, sandboxed frames, quota) or loses a
// write, values live on in memory for this page.

/**
 * @typedef {{getItem(k: string): string | null, setItem(k: string, v: string): void, removeItem(k: string): void}} StorageLike
 * @typedef {{get(k: string): string | undefined, set(k: string, v?: string | null): void}} Store
 */

/**
 * @param {StorageLike | undefined} ls
 * @returns {Store}
 */
export const createStore = (ls) => {
  /** @type {Record<string, string | undefined>} */
  const mem = {};
  return {
    get(k) {
      try {
        const v = ls.getItem(k);
        if (v != null) return v;
      } catch {}
      return mem[k];
    },
    set(k, v) {
      mem[k] = v ?? undefined;
      try {
        if (v == null) throw 0;
        ls.setItem(k, v);
      } catch {
        // Removed or not written (quota): a stale value must not shadow memory.
        try {
          ls.removeItem(k);
        } catch {}
      }
    },
  };
};
