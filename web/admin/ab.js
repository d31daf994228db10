// A/B tests in the dashboard: Compose's variants and the test's settings
// (the text above them is variant A), and a test's page: each variant's
// funnel, the p-value, which won and why.

import { $, el, fmt } from './dom.js';

const LETTERS = 'ABCDEFGH';

/** Adds a variant after the last (B, C, … up to H). */
export function addVariant() {
  const list = $('c-variants');
  const n = list.children.length + 1;
  if (n >= LETTERS.length) return;
  const letter = LETTERS[n];
  const box = el('fieldset', undefined, 'variant');
  const legend = el('legend', `Variant ${letter}`);
  const title = el('input');
  title.id = `c-v${n}-title`;
  title.required = true;
  title.maxLength = 200;
  const body = el('textarea');
  body.id = `c-v${n}-body`;
  body.rows = 2;
  const labelFor = (text, id) => {
    const l = el('label', text);
    l.htmlFor = id;
    return l;
  };
  const remove = el('button', `Remove variant ${letter}`);
  remove.type = 'button';
  remove.addEventListener('click', () => {
    box.remove();
    renumber();
  });
  box.append(legend, labelFor(`Title of variant ${letter}`, title.id), title, labelFor(`Body of variant ${letter}`, body.id), body, remove);
  list.append(box);
  $('c-add-variant').disabled = list.children.length + 1 >= LETTERS.length;
}

/** Letters and ids follow the order after a removal. */
function renumber() {
  [...$('c-variants').children].forEach((box, i) => {
    const letter = LETTERS[i + 1];
    box.querySelector('legend').textContent = `Variant ${letter}`;
    box.querySelector('button').textContent = `Remove variant ${letter}`;
    const [title, body] = box.querySelectorAll('label');
    title.textContent = `Title of variant ${letter}`;
    body.textContent = `Body of variant ${letter}`;
  });
  $('c-add-variant').disabled = $('c-variants').children.length + 1 >= LETTERS.length;
}

/** Shows the A/B settings when the test is on (with variant B to start); off, they are disabled, so that the form does not ask for them. */
export function toggle() {
  const on = $('c-ab-on').checked;
  $('c-ab-fields').hidden = !on;
  if (on && !$('c-variants').children.length) addVariant();
  for (const e of $('c-ab-fields').querySelectorAll('input, textarea, select, button')) e.disabled = !on;
  if (on) renumber();
}

/**
 * The request's `variants` and `abTest`, with variant A `a` (the compose
 * form's payload): each other variant is A with its own title and body.
 * Null when the test is off.
 */
export function abRequest(a) {
  if (!$('c-ab-on').checked) return null;
  const variant = (box) => {
    const title = box.querySelector('input').value;
    const body = box.querySelector('textarea').value;
    // A's link, icon and the rest, with this variant's title and body.
    const withText = ({ body: _, ...rest }) => ({ ...rest, title, ...(body ? { body } : {}) });
    return a.notification ? { ...a, notification: withText(a.notification) } : withText(a);
  };
  return {
    variants: [a, ...[...$('c-variants').children].map(variant)],
    abTest: {
      samplePercent: Number($('c-ab-sample').value),
      decideAfter: $('c-ab-after').value.trim(),
      metric: $('c-ab-metric').value,
      ifNoWinner: $('c-ab-none').value,
    },
  };
}

const STAGES = {
  waiting: 'waiting for its send time',
  testing: 'testing: the variants went to the sample',
  decided: 'decided',
  stopped: 'stopped: no variant went to the rest',
};

/** A message's page: its A/B test, if it is one. */
export function showAbTest(m) {
  const t = m.abTest;
  $('m-ab').hidden = !t;
  if (!t) return;
  const when = t.decideAt ? ` The winner is chosen at ${new Date(t.decideAt).toLocaleString()}.` : '';
  $('m-ab-summary').textContent = `${t.samplePercent} % of the audience, split among ${t.variants.length} variants, `
    + `by ${t.metric} per delivered; ${STAGES[t.stage] || t.stage}.${t.stage === 'testing' || t.stage === 'waiting' ? when : ''}`;
  const p = t.pValue === null || t.pValue === undefined ? 'none' : t.pValue < 0.0001 ? '< 0.0001' : t.pValue.toFixed(4);
  $('m-ab-decision').textContent = t.reason
    ? `${t.winner ? `Variant ${t.winner} won` : 'No winner'} · p-value: ${p} · ${t.reason[0].toUpperCase()}${t.reason.slice(1)}.` : '';
  const row = (part, name) => {
    const tr = el('tr');
    const link = el('a', part.messageId.slice(0, 12));
    link.href = `#messages/${part.messageId}`;
    link.title = `${name}'s message`;
    const cell = el('td');
    cell.append(link);
    const c = part.counts;
    const mark = t.winner === part.variant && name.startsWith('Variant') ? ' (winner)' : '';
    tr.append(el('th', name + mark), cell, el('td', part.state || 'not yet'), el('td', fmt(c.delivered)),
      el('td', fmt(c.shown)), el('td', fmt(c.clicked)), el('td', `${(100 * part.rate).toFixed(1)} %`));
    tr.firstChild.scope = 'row';
    return tr;
  };
  const rows = t.variants.map((v) => row(v, `Variant ${v.variant}`));
  if (t.rest) rows.push(row(t.rest, `Winner ${t.rest.variant}, to the rest`));
  $('m-ab-rows').replaceChildren(...rows);
}
