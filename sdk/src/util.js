// Small helpers shared by every module. No DOM.

const enc = new TextEncoder();

/** UTF-8 length of a string, in bytes. */
export const bytes = (s) => enc.encode(s).length;

/**
 * Cuts a value to at most `max` UTF-8 bytes, never splitting a character.
 * Empty or missing values become `undefined`, so JSON.stringify omits the field.
 * @param {unknown} s
 * @param {number} max
 * @returns {string | undefined}
 */
export const cut = (s, max) => {
  if (s == null || s === '') return;
  s = '' + s;
  // A UTF-16 code unit is at most 3 UTF-8 bytes: short strings skip encoding.
  return s.length * 3 > max && bytes(s) > max
    ? new TextDecoder().decode(enc.encode(s).slice(0, max)).replace(/\uFFFD$/, '')
    : s;
};

/** UUID v4 from crypto.getRandomValues (crypto.randomUUID needs a secure context). */
export const uuidFallback = () =>
  '10000000-1000-4000-8000-100000000000'.replace(/[018]/g, (c) =>
    (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16),
  );

/** UUID v4. */
export const uuid = () => crypto.randomUUID?.() || uuidFallback();
