// The playground page: lists the rules, edits one, runs the pipeline on every change
// (debounced) with the unsaved sources, shows claims, scope, logs, warnings, errors and run
// times, saves rules and test cases, and polls the folder for changes made elsewhere.
// API: src/playground/api.rs. Every request carries the token of the page's URL.
'use strict';

const TOKEN = document.querySelector('meta[name="playground-token"]').content;
const RUN_DEBOUNCE_MS = 300;
const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);

const state = {
  rules: [],
  current: null, // file of the rule in the editor
  buffers: new Map(), // file -> { source, saved, disk, seen }
  inputs: null,
  runSeq: 0,
  report: null,
};

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { 'x-playground-token': TOKEN, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data;
  try { data = JSON.parse(text); } catch { data = { error: { error: text } }; }
  return { status: res.status, ok: res.ok, data };
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== false && v !== undefined && v !== null) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function notify(message, kind = 'info', action) {
  const box = $('notices');
  const item = el('p', { class: `notice notice-${kind}` }, message);
  if (action) item.append(' ', el('button', { type: 'button', onclick: () => { item.remove(); action.run(); } }, action.label));
  item.append(' ', el('button', { type: 'button', class: 'dismiss', 'aria-label': 'Dismiss this message', onclick: () => item.remove() }, '×'));
  box.prepend(item);
  while (box.children.length > 4) box.lastChild.remove();
  if (kind === 'info') setTimeout(() => item.remove(), 8000);
}

function formatTime(us) {
  if (us === null || us === undefined) return '–';
  return us < 1000 ? `${us} µs` : `${(us / 1000).toFixed(2)} ms`;
}

const pretty = (v) => JSON.stringify(v, null, 2);

// --- editors ---------------------------------------------------------------------------
let ruleEditor, userEditor, contextEditor;

function anyDirty() {
  return [...state.buffers.values()].some((b) => b.source !== b.saved);
}

function updateDirty() {
  const b = state.buffers.get(state.current);
  $('dirty').hidden = !(b && b.source !== b.saved);
  const dirty = anyDirty();
  $('save-case').disabled = dirty;
  $('case-hint').textContent = dirty
    ? 'Save the rule first: a test case records what the saved rules produce.'
    : "Appends the inputs and the saved rules' current result to tests/playground.toml.";
  renderRuleList();
}

// --- rules -------------------------------------------------------------------------------
function renderRuleList() {
  const list = $('rule-list');
  list.replaceChildren(...state.rules.map((r) => {
    const b = state.buffers.get(r.file);
    const dirty = b && b.source !== b.saved;
    return el('li', {},
      el('button', {
        type: 'button',
        class: 'rule-button',
        'data-file': r.file,
        'aria-current': r.file === state.current ? 'true' : false,
        onclick: () => openRule(r.file),
      }, r.name, dirty ? el('span', { class: 'badge badge-warn' }, 'unsaved') : null),
      el('span', { class: r.enabled ? 'badge badge-ok' : 'badge' }, r.enabled ? 'enabled' : 'disabled'));
  }));
}

async function loadRules() {
  const { ok, data } = await api('GET', '/api/rules');
  if (!ok) return;
  $('folder').textContent = `Rules folder: ${data.dir}`;
  $('rules-error').textContent = data.error ?? '';
  state.rules = data.rules;
  renderRuleList();
  return data;
}

async function fetchRule(file) {
  const { ok, data } = await api('GET', `/api/rule?file=${encodeURIComponent(file)}`);
  if (!ok) throw new Error(data.error?.error ?? 'cannot read the rule');
  return data;
}

async function openRule(file) {
  if (!state.buffers.has(file)) {
    const r = await fetchRule(file);
    state.buffers.set(file, { source: r.source, saved: r.source, disk: r.version, seen: r.version });
  }
  state.current = file;
  const rule = state.rules.find((r) => r.file === file);
  $('rule-name').textContent = rule ? rule.name : file;
  ruleEditor.setValue(state.buffers.get(file).source);
  showEditorError();
  updateDirty();
}

// --- runs --------------------------------------------------------------------------------
let runTimer = null;
function scheduleRun() {
  clearTimeout(runTimer);
  runTimer = setTimeout(runNow, RUN_DEBOUNCE_MS);
}

async function runNow() {
  clearTimeout(runTimer);
  const seq = ++state.runSeq;
  const sources = {};
  for (const [file, b] of state.buffers) if (b.source !== b.saved) sources[file] = b.source;
  const started = performance.now();
  let res;
  try {
    res = await api('POST', '/api/run', { user: userEditor.value, context: contextEditor.value, sources });
  } catch (e) {
    if (seq === state.runSeq) setStatus('error', 'no answer');
    return;
  }
  if (seq !== state.runSeq) return; // a newer run is on its way
  $('run-time').textContent = `answered in ${Math.round(performance.now() - started)} ms`;
  for (const f of ['user', 'context']) { $(`${f}-error`).textContent = ''; (f === 'user' ? userEditor : contextEditor).setErrorLine(0); }
  if (res.status === 400 && res.data.error?.kind === 'input') {
    const e = res.data.error;
    $(`${e.field}-error`).textContent = e.line ? `${e.field} JSON, line ${e.line}, column ${e.column}: ${e.detail}` : e.error;
    (e.field === 'user' ? userEditor : contextEditor).setErrorLine(e.line);
    setStatus('input', 'invalid input');
    return;
  }
  if (!res.ok) {
    setStatus('error', 'error');
    notify(res.data.error?.error ?? `HTTP ${res.status}`, 'error');
    return;
  }
  renderReport(res.data);
}

function setStatus(kind, text) {
  const s = $('status');
  s.textContent = text;
  s.className = `badge status-${kind}`;
}

function claimsTable(claims) {
  if (!claims) return el('p', { class: 'muted' }, 'none (no token is issued)');
  const keys = Object.keys(claims);
  if (!keys.length) return el('p', { class: 'muted' }, 'no custom claims');
  return el('table', { class: 'claims-table' },
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Claim'), el('th', { scope: 'col' }, 'Value'))),
    el('tbody', {}, keys.map((k) => el('tr', { 'data-claim': k }, el('th', { scope: 'row' }, el('code', {}, k)), el('td', {}, el('code', {}, JSON.stringify(claims[k])))))));
}

function jwtView(jwt) {
  if (!jwt) return el('p', { class: 'muted' }, 'not issued (the requested scope has no openid)');
  const [h, p, s] = jwt.jwt.split('.');
  return el('div', {},
    el('p', { class: 'jwt' }, el('span', { class: 'jwt-h' }, h), '.', el('span', { class: 'jwt-p' }, p), '.', el('span', { class: 'jwt-s' }, s)),
    el('h4', {}, 'Header'), el('pre', {}, pretty(jwt.header)),
    el('h4', {}, 'Payload (standard and custom claims)'), el('pre', {}, pretty(jwt.payload)));
}

function scopeView(scope) {
  if (!scope) return el('p', { class: 'muted' }, '–');
  const list = (xs) => (xs && xs.length ? xs.map((x) => el('code', {}, x)).reduce((a, c) => [...a, ' ', c], []) : [el('span', { class: 'muted' }, '(none)')]);
  return el('dl', { class: 'scope' },
    el('dt', {}, 'Requested'), el('dd', {}, scope.requested ? list(scope.requested) : el('span', { class: 'muted' }, '(no scope in context.request)')),
    el('dt', {}, 'Final'), el('dd', { id: 'final-scope' }, list(scope.final), scope.rewritten ? el('span', { class: 'badge' }, 'rewritten by a rule') : null),
    scope.removed.length ? [el('dt', {}, 'Removed'), el('dd', { class: 'removed' }, list(scope.removed))] : null,
    scope.added.length ? [el('dt', {}, 'Added'), el('dd', { class: 'added' }, list(scope.added))] : null);
}

function renderReport(r) {
  state.report = r;
  // How many results the page has shown (tests wait for the next one).
  document.body.dataset.runs = String(Number(document.body.dataset.runs ?? 0) + 1);
  const labels = { ok: 'ok', denied: 'denied', error: 'rule error', compile_error: 'does not compile' };
  setStatus(r.status, labels[r.status] ?? r.status);
  const box = $('error-box');
  if (r.error) {
    const e = r.error;
    const where = [e.rule && `rule ${e.rule}`, e.file, e.line && `line ${e.line}`, e.column && `column ${e.column}`].filter(Boolean).join(', ');
    box.hidden = false;
    box.className = `error-box error-${e.kind}`;
    box.replaceChildren(
      el('p', { class: 'error-title' }, e.kind === 'denied' ? 'Denied' : e.kind === 'compile' ? 'Compile error' : 'Error', where ? ` — ${where}` : '', e.approximate ? ' (the line of the deny call)' : ''),
      el('p', { id: 'error-message' }, e.message),
      e.file && e.line ? el('button', { type: 'button', onclick: () => goToError() }, `Go to line ${e.line}`) : null);
  } else {
    box.hidden = true;
    box.replaceChildren();
  }
  $('scope').replaceChildren(scopeView(r.scope));
  $('access-claims').replaceChildren(claimsTable(r.access_token));
  $('id-claims').replaceChildren(claimsTable(r.id_token));
  $('access-jwt').replaceChildren(r.signed ? jwtView(r.signed.access_token) : el('p', { class: 'muted' }, '–'));
  $('id-jwt').replaceChildren(r.signed ? jwtView(r.signed.id_token) : el('p', { class: 'muted' }, '–'));
  $('signed-note').textContent = r.signed ? r.signed.note : '';
  $('rule-table').tBodies[0].replaceChildren(...r.rules.map((rule) => el('tr', { class: rule.ran ? '' : 'not-run', 'data-rule': rule.name },
    el('th', { scope: 'row' }, rule.name, rule.enabled ? null : el('span', { class: 'muted small' }, ' (disabled)')),
    el('td', { class: 'time' }, rule.ran ? formatTime(rule.micros) : 'not run'),
    el('td', {}, rule.logs.length ? el('ul', { class: 'log' }, rule.logs.map((l) => el('li', {}, el('code', {}, l)))) : ''),
    el('td', {}, rule.warnings.length ? el('ul', { class: 'warnings' }, rule.warnings.map((w) => el('li', {}, `dropped `, el('code', {}, w.key), ` from the ${w.token}: ${w.reason}`))) : ''))));
  showEditorError();
}

/** Highlights the error's line when its rule is in the editor. */
function showEditorError() {
  const e = state.report?.error;
  const here = e && e.file === state.current && e.line;
  ruleEditor.setErrorLine(here ? e.line : 0);
  $('compile-error').textContent = here ? `Line ${e.line}${e.column ? `, column ${e.column}` : ''}: ${e.message}` : '';
}

async function goToError() {
  const e = state.report?.error;
  if (!e?.file) return;
  if (e.file !== state.current) await openRule(e.file);
  ruleEditor.goToLine(e.line, e.column ?? 1);
}

// --- saving ------------------------------------------------------------------------------
async function saveRule(force = false) {
  const file = state.current;
  const b = state.buffers.get(file);
  if (!b) return;
  const source = b.source;
  const res = await api('PUT', '/api/rule', { file, source, ...(force ? {} : { base_version: b.disk }) });
  if (res.ok) {
    b.saved = source;
    b.disk = b.seen = res.data.version;
    updateDirty();
    notify(`Saved ${file}.`);
    scheduleRun();
  } else if (res.status === 422) {
    const e = res.data.error;
    renderReport({ ...(state.report ?? {}), status: 'compile_error', error: e, rules: state.report?.rules ?? [], access_token: null, id_token: null, scope: null, signed: null });
    notify(`Not saved: ${e.text ?? e.error}`, 'error');
    if (e.line) ruleEditor.goToLine(e.line, e.column ?? 1);
  } else if (res.status === 409) {
    notify(res.data.error.error, 'warn', { label: 'Overwrite the file', run: () => saveRule(true) });
  } else {
    notify(`Not saved: ${res.data.error?.error ?? res.status}`, 'error');
  }
}

async function saveCase(ev) {
  ev.preventDefault();
  if (anyDirty()) return;
  const name = $('case-name').value.trim();
  const res = await api('POST', '/api/case', { name, user: userEditor.value, context: contextEditor.value });
  if (res.ok) {
    notify(`Test case "${res.data.name}" appended to ${res.data.file}${res.data.line ? ` (line ${res.data.line})` : ''}; it passes claimrules test.`, 'success');
    $('case-name').value = defaultCaseName();
    loadInputs();
  } else {
    notify(`Test case not saved: ${res.data.error?.error ?? res.status}`, 'error');
  }
}

function defaultCaseName() {
  return `playground case ${new Date().toISOString().slice(0, 19).replace('T', ' ')}`;
}

// --- inputs ------------------------------------------------------------------------------
async function loadInputs() {
  const { ok, data } = await api('GET', '/api/inputs');
  if (!ok) return;
  const first = !state.inputs;
  state.inputs = data;
  for (const which of ['user', 'context']) {
    const select = $(`${which}-from`);
    const keep = select.value;
    select.replaceChildren(
      el('option', { value: 'default' }, `default ${which}`),
      data.fixtures.length ? el('optgroup', { label: 'Fixtures (tests/fixtures/)' }, data.fixtures.map((f, i) => el('option', { value: `fixture:${i}` }, f.file))) : null,
      data.cases.length ? el('optgroup', { label: 'Test cases' }, data.cases.map((c, i) => el('option', { value: `case:${i}` }, `${c.name} (${c.file})`))) : null);
    if (!first) select.value = keep;
  }
  if (first) {
    userEditor.setValue(pretty(data.user));
    contextEditor.setValue(pretty(data.context));
  }
}

function pick(which) {
  const v = $(`${which}-from`).value;
  const d = state.inputs;
  let value;
  if (v === 'default') value = d[which];
  else if (v.startsWith('fixture:')) value = d.fixtures[Number(v.slice(8))].value;
  else if (v.startsWith('case:')) value = d.cases[Number(v.slice(5))][which];
  (which === 'user' ? userEditor : contextEditor).setValue(pretty(value));
  scheduleRun();
}

// --- changes on disk -----------------------------------------------------------------------
async function poll() {
  try {
    const data = await loadRules();
    if (!data) return;
    let changed = false;
    for (const r of data.rules) {
      const b = state.buffers.get(r.file);
      if (!b || r.version === b.seen) continue;
      b.seen = r.version;
      if (b.source === b.saved) {
        const fresh = await fetchRule(r.file);
        b.source = b.saved = fresh.source;
        b.disk = b.seen = fresh.version;
        if (r.file === state.current) ruleEditor.setValue(fresh.source);
        notify(`${r.file} changed on disk: reloaded.`, 'warn');
        changed = true;
      } else {
        notify(`${r.file} changed on disk; your unsaved edits are kept.`, 'warn', {
          label: 'Reload from disk (drop my edits)',
          run: async () => {
            const fresh = await fetchRule(r.file);
            b.source = b.saved = fresh.source;
            b.disk = b.seen = fresh.version;
            if (r.file === state.current) ruleEditor.setValue(fresh.source);
            updateDirty();
            scheduleRun();
          },
        });
      }
    }
    if (changed) { updateDirty(); scheduleRun(); }
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// --- start -------------------------------------------------------------------------------
async function start() {
  ruleEditor = window.createEditor($('rule-editor-box'), {
    label: 'Rule source (Rhai)', language: 'rhai', rows: 18, id: 'rule-editor',
    onChange: (text) => {
      const b = state.buffers.get(state.current);
      if (b) { b.source = text; updateDirty(); }
      scheduleRun();
    },
  });
  userEditor = window.createEditor($('user-editor-box'), { label: 'User (JSON)', language: 'json', rows: 10, id: 'user-editor', onChange: scheduleRun });
  contextEditor = window.createEditor($('context-editor-box'), { label: 'Context (JSON)', language: 'json', rows: 10, id: 'context-editor', onChange: scheduleRun });
  $('save').addEventListener('click', () => saveRule());
  $('case-form').addEventListener('submit', saveCase);
  $('user-from').addEventListener('change', () => pick('user'));
  $('context-from').addEventListener('change', () => pick('context'));
  $('case-name').value = defaultCaseName();
  document.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 's') { e.preventDefault(); saveRule(); }
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') { e.preventDefault(); runNow(); }
  });
  await Promise.all([loadRules(), loadInputs()]);
  if (state.rules.length) await openRule(state.rules[0].file);
  await runNow();
  document.body.dataset.ready = 'true';
  setTimeout(poll, POLL_MS);
}

start();
