// What every page of the dashboard builds with: an element by id, a new
// element with its text, and numbers as the operator's locale writes them.

export const $ = (id) => document.getElementById(id);

export const fmt = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString());

export function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
