// What a click is described by. Reads the DOM, writes nothing.
import { cut } from './util.js';

/**
 * A CSS selector path for an element: up to 6 segments `tag.class.class`
 * (two classes at most) with `:nth-of-type(n)` where the parent has several
 * of that tag, joined with ` > `; it stops at an ancestor with an id (`#id`)
 * and leaves out body and html. At most 1024 bytes.
 * @param {Element | null} el
 */
export const selector = (el) => {
  const out = [];
  for (let i = 0; el && i < 6 && !/^(body|html)$/.test(el.localName); i++, el = el.parentElement) {
    if (el.id) {
      out.unshift('#' + CSS.escape(el.id));
      break;
    }
    const name = el.localName;
    let n = 1;
    let more = 0;
    let sib = el;
    while ((sib = sib.previousElementSibling)) if (sib.localName == name) n++;
    for (sib = el; !more && (sib = sib.nextElementSibling); ) more = sib.localName == name;
    out.unshift(
      name +
        [...el.classList].slice(0, 2).map((c) => '.' + CSS.escape(c)).join('') +
        (n > 1 || more ? `:nth-of-type(${n})` : ''),
    );
  }
  return cut(out.join(' > '), 1024);
};

const FIELDS = 'textarea,select,[contenteditable]';

/**
 * Text of a clicked element: whitespace collapsed, at most 256 characters,
 * read from at most ~1000 characters of text nodes. Nothing for an input, nor
 * for anything inside or containing a textarea, select (options included) or
 * contenteditable: values and typed text are never read.
 * @param {Element} el
 */
export const clickText = (el) => {
  if (el.localName == 'input' || el.closest(FIELDS) || el.querySelector(FIELDS)) return;
  const walk = document.createTreeWalker(el, 4 /* NodeFilter.SHOW_TEXT */);
  let s = '';
  let n;
  while (s.length < 1000 && (n = walk.nextNode())) s += n.data;
  // Do not leave half a surrogate pair at the cut.
  return cut(s.replace(/\s+/g, ' ').trim().slice(0, 256).replace(/[\uD800-\uDBFF]$/, ''), 1024);
};
