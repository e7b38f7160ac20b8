// DOM helpers both pages use. Text goes in with textContent only: values
// from events (paths, referrers, selectors) are never parsed as HTML.

/** The element with `id`. */
export const $ = (id) => document.getElementById(id);

/** A new `tag` element with class `cls` and text `text`. */
export const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
