// tagwatch web console: one page, hash routes, vanilla JS, no build step.
//
// Rules this file keeps:
// - every server-provided string reaches the page through textContent (the `h` helper turns
//   strings into text nodes); nothing is ever assigned to innerHTML;
// - the token lives in sessionStorage only (gone when the tab closes) and is sent as a
//   bearer header; the live alert stream is read with fetch() because EventSource cannot
//   send headers;
// - the page only chooses which screens to show from the role; the API checks every call.

import { makeMap, geometryLayer, fixMarker, label, boroughs, forgetBoroughs, ZONE_STYLE } from './map.js';

/* global L */

const TOKEN_KEY = 'tagwatch.token';
const main = document.getElementById('main');
const session = { token: sessionStorage.getItem(TOKEN_KEY), me: null };
let viewAbort = new AbortController();

// ---------------------------------------------------------------------------------------
// DOM and formatting helpers

/** `h('p', {className: 'x', onclick: f}, 'text', child)` — strings become text nodes. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && k !== 'list' && k !== 'form') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A time as London wall-clock time (the programme's zone), or a dash. */
function when(s) {
  if (!s) return '—';
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return String(s);
  return d.toLocaleString('en-GB', { timeZone: 'Europe/London', dateStyle: 'short', timeStyle: 'medium' });
}

/** The value of a datetime-local input as RFC 3339 (UTC), or undefined. */
function rfc3339(input) {
  if (!input) return undefined;
  const d = new Date(input);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

/** A datetime-local value for a Date (browser local time). */
function localInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function field(labelText, input, hint) {
  return h('label', { className: 'field' }, h('span', {}, labelText), input, hint ? h('small', {}, hint) : null);
}

function dl(pairs) {
  return h('dl', { className: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
}

function table(headers, rows, props = {}) {
  return h('table', props, h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows));
}

/** A status line under a form: errors in red, successes plain. */
function notice() {
  const el = h('p', { className: 'notice', role: 'status' });
  el.ok = (msg) => { el.className = 'notice ok'; el.textContent = msg; };
  el.fail = (err) => { el.className = 'notice error'; el.textContent = err?.message ?? String(err); };
  el.clear = () => { el.className = 'notice'; el.textContent = ''; };
  return el;
}

function short(hash) {
  return typeof hash === 'string' ? `${hash.slice(0, 12)}…` : '—';
}

/** Replaces the page unless the view that asks has been left (its signal aborted). */
function render(signal, ...nodes) {
  if (signal.aborted) throw new DOMException('view left', 'AbortError');
  main.replaceChildren(...nodes);
}

// ---------------------------------------------------------------------------------------
// API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
  }
}

/** Calls the API with the session token; JSON in, JSON out; problem+json becomes ApiError. */
async function api(method, path, body, opts = {}) {
  const headers = { Authorization: `Bearer ${session.token}` };
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = opts.contentType ?? 'application/json';
    payload = opts.contentType ? body : JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers, body: payload, signal: opts.signal });
  if (resp.status === 401 && session.me) {
    signOut('Your token is no longer valid; sign in again.');
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : '';
}

/**
 * Follows `GET /v1/alerts/stream` (Server-Sent Events) with fetch and a stream reader,
 * calling `onAlert({change, alert})` per `alert` event and `onState('live'|'connecting'|
 * 'offline')`. Reconnects after a drop until `signal` aborts; each (re)connection calls
 * `onState('live')` so the caller can reload what it may have missed.
 */
async function followAlerts(signal, onAlert, onState) {
  while (!signal.aborted) {
    onState('connecting');
    try {
      const resp = await fetch('/v1/alerts/stream', {
        headers: { Authorization: `Bearer ${session.token}`, Accept: 'text/event-stream' },
        signal,
      });
      if (!resp.ok || !resp.body) throw new ApiError(resp.status, null);
      onState('live');
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut).replace(/^\r?\n\r?\n/, '');
          const ev = parseSse(block);
          if (ev.event === 'alert' && ev.data) {
            try { onAlert(JSON.parse(ev.data)); } catch { /* a malformed event is skipped */ }
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) { signOut('Sign in again.'); return; }
    }
    onState('offline');
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/** One SSE block → `{event, data}` (comments and unknown fields ignored). */
function parseSse(block) {
  const ev = { event: 'message', data: '' };
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const name = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (name === 'event') ev.event = value;
    else if (name === 'data') data.push(value);
  }
  ev.data = data.join('\n');
  return ev;
}

// ---------------------------------------------------------------------------------------
// Session and routing

const SECTIONS = {
  officer: [['#/alerts', 'Alerts'], ['#/subjects', 'Subjects']],
  admin: [['#/alerts', 'Alerts'], ['#/subjects', 'Subjects']],
  analyst: [['#/queries', 'Location queries']],
  auditor: [['#/audit', 'Audit log']],
};

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
  session.me = null;
  forgetBoroughs();
  viewAbort.abort();
  history.replaceState(null, '', '#/'); // no hashchange: the sign-in form below keeps its message
  renderChrome();
  showSignIn(message);
}

function renderChrome() {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  const out = document.getElementById('signout');
  nav.replaceChildren();
  who.textContent = '';
  out.hidden = !session.me;
  if (!session.me) return;
  for (const [href, text] of SECTIONS[session.me.role] ?? []) {
    nav.append(h('a', { href, className: location.hash.startsWith(href) ? 'active' : '' }, text));
  }
  who.textContent = `${session.me.name} · ${session.me.role}`;
}

function showSignIn(message) {
  const token = h('input', { type: 'password', name: 'token', id: 'token', autocomplete: 'off', required: true });
  const msg = notice();
  if (message) msg.fail(message);
  const form = h('form', { className: 'card signin', id: 'signin' },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Paste the access token your administrator gave you. It is kept only in this tab.'),
    field('Token', token),
    h('button', { type: 'submit' }, 'Sign in'),
    msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    session.token = token.value.trim();
    try {
      session.me = await api('GET', '/v1/me');
    } catch (err) {
      session.token = null;
      msg.fail(err.status === 401 ? 'That token is not valid.' : err);
      return;
    }
    if (!SECTIONS[session.me.role]) {
      session.token = null;
      session.me = null;
      msg.fail('This token belongs to a device; the console is for people.');
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, session.token);
    const home = SECTIONS[session.me.role][0][0];
    if (location.hash === home) route();
    else location.hash = home; // hashchange routes
  });
  main.replaceChildren(form);
  token.focus();
}

const ROUTES = [
  [/^#\/alerts$/, (m, p) => alertQueue(p)],
  [/^#\/alert\/(\d+)$/, (m) => alertPage(m[1])],
  [/^#\/subjects$/, () => subjectList()],
  [/^#\/subject\/(.+)$/, (m) => subjectPage(decodeURIComponent(m[1]))],
  [/^#\/queries$/, () => queriesPage()],
  [/^#\/audit$/, (m, p) => auditPage(p)],
];

async function route() {
  viewAbort.abort();
  viewAbort = new AbortController();
  if (!session.token) { renderChrome(); showSignIn(); return; }
  if (!session.me) {
    try { session.me = await api('GET', '/v1/me'); } catch { signOut('Sign in again.'); return; }
  }
  renderChrome();
  const [path, query] = location.hash.split('?');
  for (const [re, view] of ROUTES) {
    const m = path.match(re);
    if (m) {
      main.replaceChildren(h('p', { className: 'loading' }, 'Loading…'));
      try {
        await view(m, new URLSearchParams(query ?? ''));
      } catch (e) {
        if (e.name === 'AbortError') return; // the user has moved on
        main.replaceChildren(h('div', { className: 'card' }, h('h1', {}, 'Could not load this page'), h('p', { className: 'notice error' }, e.message)));
      }
      return;
    }
  }
  location.hash = (SECTIONS[session.me.role] ?? [['#/']])[0][0];
}

document.getElementById('signout').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);

// ---------------------------------------------------------------------------------------
// Officers: the alert queue

const STATUSES = ['open', 'acknowledged', 'closed', 'withdrawn'];
const TYPES = ['exclusion_breach', 'curfew_breach', 'comms_loss', 'no_fix', 'tamper', 'low_battery'];
const OUTCOMES = [
  ['breach_confirmed', 'Breach confirmed'],
  ['no_action', 'No action'],
  ['authorised', 'Authorised'],
  ['equipment_fault', 'Equipment fault'],
];

function select(name, options, value, blank) {
  const s = h('select', { name, id: name });
  if (blank) s.append(h('option', { value: '' }, blank));
  for (const o of options) {
    const [v, t] = Array.isArray(o) ? o : [o, o.replaceAll('_', ' ')];
    s.append(h('option', { value: v, selected: v === value }, t));
  }
  return s;
}

async function alertQueue(params) {
  const signal = viewAbort.signal;
  const filters = {
    status: params.get('status') ?? '',
    type: params.get('type') ?? '',
    subject_id: params.get('subject_id') ?? '',
  };
  const status = select('status', STATUSES, filters.status, 'any status');
  const type = select('type', TYPES, filters.type, 'any type');
  const subject = h('input', { name: 'subject_id', id: 'subject_id', value: filters.subject_id, placeholder: 'e.g. GTO-00017' });
  const filterForm = h('form', { className: 'filters' },
    field('Status', status), field('Type', type), field('Subject', subject),
    h('button', { type: 'submit' }, 'Filter'));
  filterForm.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = `#/alerts${qs({ status: status.value, type: type.value, subject_id: subject.value.trim() })}`;
  });
  const live = h('span', { id: 'live', className: 'live', dataset: { state: 'connecting' } }, 'connecting…');
  const tbody = h('tbody', { id: 'queue' });
  const more = h('button', { type: 'button', hidden: true }, 'Older alerts');
  const msg = notice();
  render(signal, h('section', { className: 'card' },
    h('div', { className: 'titlebar' }, h('h1', {}, 'Alert queue'), live),
    filterForm,
    h('table', { className: 'queue' },
      h('thead', {}, h('tr', {}, ['#', 'Type', 'Subject', 'Device', 'Started', 'Ended', 'Detected', 'Evidence', 'Status'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody),
    more, msg));

  const rowFor = (a, fresh) => h('tr', { dataset: { id: a.id, status: a.status }, className: fresh ? 'fresh' : '' },
    h('td', {}, h('a', { href: `#/alert/${a.id}` }, String(a.id))),
    h('td', {}, a.type.replaceAll('_', ' ')),
    h('td', {}, h('a', { href: `#/subject/${encodeURIComponent(a.subject_id)}` }, a.subject_id)),
    h('td', {}, a.device_id),
    h('td', {}, when(a.started_at)),
    h('td', {}, a.ended_at ? when(a.ended_at) : 'ongoing'),
    h('td', {}, when(a.detected_at), a.detected_late ? h('span', { className: 'tag late' }, 'late') : null),
    h('td', { className: 'num' }, String(a.evidence_count)),
    h('td', {}, h('span', { className: `tag ${a.status}` }, a.status)));

  const matches = (a) => (!filters.status || a.status === filters.status)
    && (!filters.type || a.type === filters.type)
    && (!filters.subject_id || a.subject_id === filters.subject_id);

  let cursor = null;
  const load = async (reset) => {
    const page = await api('GET', `/v1/alerts${qs({ ...filters, cursor: reset ? undefined : cursor })}`, undefined, { signal });
    if (reset) tbody.replaceChildren();
    for (const a of page.items) tbody.append(rowFor(a, false));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!tbody.children.length) tbody.append(h('tr', { className: 'empty' }, h('td', { colSpan: 9 }, 'No alerts.')));
  };
  more.addEventListener('click', () => load(false).catch((e) => msg.fail(e)));

  // newest first: rows are ordered by id, descending
  const upsert = ({ alert: a }) => {
    tbody.querySelector('tr.empty')?.remove();
    const old = tbody.querySelector(`tr[data-id="${Number(a.id)}"]`);
    if (!matches(a)) { old?.remove(); return; }
    const row = rowFor(a, true);
    if (old) { old.replaceWith(row); return; }
    const after = [...tbody.children].find((r) => Number(r.dataset.id) < a.id);
    tbody.insertBefore(row, after ?? null);
  };
  const setLive = (state) => {
    live.dataset.state = state;
    live.textContent = { live: 'live', connecting: 'connecting…', offline: 'offline — retrying' }[state];
    // after each (re)connection, reload so nothing that happened while away is missed
    if (state === 'live') load(true).catch((e) => { if (!signal.aborted) msg.fail(e); });
  };
  await load(true);
  followAlerts(signal, upsert, setLive);
}

// ---------------------------------------------------------------------------------------
// Officers: one alert

const TRAIL_MARGIN_MS = 30 * 60 * 1000;

async function alertPage(id) {
  const signal = viewAbort.signal;
  const a = await api('GET', `/v1/alerts/${id}`);
  const mapEl = h('div', { className: 'map', id: 'alert-map' });
  const mapNote = h('p', { className: 'hint' });
  const actions = h('div', { className: 'actions' });
  const zoneCell = h('span', { id: 'alert-zone' }, a.zone_id === null ? '—' : `#${a.zone_id}`);
  render(signal, h('section', { className: 'card' },
    h('p', {}, h('a', { href: '#/alerts' }, '← Alert queue')),
    h('div', { className: 'titlebar' },
      h('h1', {}, `Alert ${a.id}: ${a.type.replaceAll('_', ' ')}`),
      h('span', { className: `tag ${a.status}`, id: 'alert-status' }, a.status)),
    h('div', { className: 'split' },
      h('div', {},
        dl([
          ['Subject', h('a', { href: `#/subject/${encodeURIComponent(a.subject_id)}` }, a.subject_id)],
          ['Device', a.device_id],
          ['Zone', zoneCell],
          ['Started', when(a.started_at)],
          ['Ended', a.ended_at ? when(a.ended_at) : 'ongoing'],
          ['Detected', `${when(a.detected_at)}${a.detected_late ? ' (late data)' : ''}`],
          ['Evidence fixes', String(a.evidence_count)],
          ['Outcome', a.outcome ? a.outcome.replaceAll('_', ' ') : '—'],
          ['Note', a.note ?? '—'],
          ['Withdrawn because', a.withdrawn_reason ?? '—'],
        ]),
        actions),
      h('div', {}, mapEl, mapNote))),
  h('section', { className: 'card' }, h('h2', {}, 'Evidence'),
    table(['Fix time', 'Latitude', 'Longitude', 'Accuracy (m)'],
      a.evidence.map((f) => h('tr', {}, h('td', {}, when(f.ts)), h('td', {}, f.lat ?? '—'), h('td', {}, f.lon ?? '—'), h('td', {}, f.accuracy_m ?? '—'))),
      { id: 'evidence' })),
  h('section', { className: 'card' }, h('h2', {}, 'History'),
    table(['When', 'What', 'By', 'Detail'],
      a.events.map((e) => h('tr', {}, h('td', {}, when(e.at)), h('td', {}, e.kind), h('td', {}, e.actor === null ? 'engine' : `user ${e.actor}`),
        h('td', {}, h('code', {}, e.detail && Object.keys(e.detail).length ? JSON.stringify(e.detail) : '')))))));

  renderActions(a, actions);

  const { layer, fit } = await makeMap(mapEl, api);
  const notes = [];
  if (a.zone_id !== null) {
    try {
      const zones = await api('GET', `/v1/subjects/${encodeURIComponent(a.subject_id)}/zones`);
      const z = zones.items.find((x) => x.id === a.zone_id);
      const zl = z && await geometryLayer(api, z.geometry, ZONE_STYLE[z.kind]);
      if (z) zoneCell.textContent = `#${z.id} ${z.name} (${z.kind})`;
      if (zl) { zl.bindTooltip(label(`${z.kind} zone: ${z.name}`)); layer.addLayer(zl); } else notes.push('The zone is no longer current, so it is not drawn.');
    } catch (e) { notes.push(`Zone unavailable: ${e.message}`); }
  }
  // the trail around the episode (audited by the server as a trail view)
  const from = new Date(new Date(a.started_at).getTime() - TRAIL_MARGIN_MS).toISOString();
  const to = new Date((a.ended_at ? new Date(a.ended_at).getTime() : Date.now()) + TRAIL_MARGIN_MS).toISOString();
  try {
    const fc = await api('GET', `/v1/subjects/${encodeURIComponent(a.subject_id)}/trail${qs({ from, to, format: 'geojson' })}`);
    const line = (fc.features ?? []).filter((f) => f.geometry?.type === 'LineString');
    L.geoJSON({ type: 'FeatureCollection', features: line }, { style: { color: '#2c5aa0', weight: 2, dashArray: '4 4', className: 'tw-trail' } }).addTo(layer);
    for (const f of (fc.features ?? []).filter((x) => x.geometry?.type === 'Point')) {
      const [lon, lat] = f.geometry.coordinates;
      layer.addLayer(L.circleMarker([lat, lon], { radius: 3, color: '#2c5aa0', weight: 1, fillOpacity: 0.6, className: 'tw-trail-fix' })
        .bindTooltip(label(when(f.properties?.ts))));
    }
  } catch (e) {
    notes.push(`Trail unavailable: ${e.message}`);
  }
  for (const f of a.evidence) {
    if (f.lat === null || f.lon === null) continue;
    layer.addLayer(fixMarker(f.lat, f.lon, f.accuracy_m, '#e67e22', [when(f.ts), `±${f.accuracy_m ?? '?'} m`], 'tw-evidence'));
  }
  fit();
  mapNote.textContent = notes.join(' ');
}

function renderActions(a, box) {
  box.replaceChildren();
  const msg = notice();
  if (a.status === 'open') {
    const note = h('input', { name: 'ack-note', id: 'ack-note', placeholder: 'optional' });
    const ack = h('form', { className: 'inline', id: 'ack-form' }, h('h2', {}, 'Acknowledge'), field('Note', note), h('button', { type: 'submit' }, 'Acknowledge'));
    ack.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await api('POST', `/v1/alerts/${a.id}/acknowledge`, note.value.trim() ? { note: note.value.trim() } : {});
        route();
      } catch (err) { msg.fail(err); }
    });
    box.append(ack);
  }
  if (a.status === 'open' || a.status === 'acknowledged') {
    const outcome = select('outcome', OUTCOMES, '', 'choose an outcome…');
    outcome.required = true;
    const note = h('textarea', { name: 'close-note', id: 'close-note', rows: 3, required: true });
    const close = h('form', { id: 'close-form' }, h('h2', {}, 'Close'), field('Outcome', outcome), field('Note', note, 'What was found and done.'), h('button', { type: 'submit' }, 'Close alert'));
    close.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await api('POST', `/v1/alerts/${a.id}/close`, { outcome: outcome.value, note: note.value.trim() });
        route();
      } catch (err) { msg.fail(err); }
    });
    box.append(close);
  }
  box.append(msg);
}

// ---------------------------------------------------------------------------------------
// Officers: subjects, zones, curfews, absences

async function subjectList() {
  const signal = viewAbort.signal;
  const page = await api('GET', '/v1/subjects');
  render(signal, h('section', { className: 'card' }, h('h1', {}, 'Subjects'),
    page.items.length
      ? table(['Subject', 'Name', 'Borough', 'Time zone'], page.items.map((s) => h('tr', {},
        h('td', {}, h('a', { href: `#/subject/${encodeURIComponent(s.id)}` }, s.id)),
        h('td', {}, s.display_name ?? '—'), h('td', {}, s.borough ?? '—'), h('td', {}, s.timezone))))
      : h('p', {}, 'No subjects on your caseload.')));
}

const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

function scheduleText(s) {
  if (!s) return 'always';
  return (s.windows ?? []).map((w) => `${(w.days ?? []).join(',')} ${w.start}–${w.end}`).join('; ') + (s.timezone ? ` (${s.timezone})` : '');
}

async function subjectPage(sid) {
  const signal = viewAbort.signal;
  const path = `/v1/subjects/${encodeURIComponent(sid)}`;
  const [s, zones] = await Promise.all([api('GET', path), api('GET', `${path}/zones`)]);
  const mapEl = h('div', { className: 'map tall', id: 'subject-map' });
  const zoneMsg = notice();
  const zoneRows = zones.items.map((z) => {
    const del = h('button', { type: 'button', className: 'small danger' }, 'End');
    del.addEventListener('click', async () => {
      if (!confirm(`End zone ${z.name}? Its history is kept.`)) return;
      try { await api('DELETE', `/v1/zones/${z.id}`); route(); } catch (e) { zoneMsg.fail(e); }
    });
    return h('tr', { dataset: { zone: z.id } },
      h('td', {}, String(z.id)),
      h('td', {}, h('span', { className: `tag ${z.kind}` }, z.kind === 'inclusion' && z.schedule ? 'curfew' : z.kind)),
      h('td', {}, z.name), h('td', {}, z.geometry?.type ?? '?'), h('td', {}, scheduleText(z.schedule)),
      h('td', { className: 'num' }, String(z.grace_s)), h('td', {}, when(z.valid_from)), h('td', {}, z.valid_to ? when(z.valid_to) : '—'), h('td', {}, del));
  });
  const picker = h('div');
  const absence = absenceForm(path);
  render(signal, 
    h('section', { className: 'card' },
      h('p', {}, h('a', { href: '#/subjects' }, '← Subjects')),
      h('div', { className: 'titlebar' }, h('h1', {}, `Subject ${s.id}`),
        h('a', { href: `#/alerts${qs({ subject_id: s.id })}` }, 'Alerts for this subject')),
      dl([['Name', s.display_name ?? '—'], ['Borough', s.borough ?? '—'], ['Time zone', s.timezone]]),
      mapEl),
    h('section', { className: 'card' }, h('h2', {}, 'Zones and curfews'),
      zoneRows.length ? table(['#', 'Kind', 'Name', 'Shape', 'Schedule', 'Grace (s)', 'From', 'To', ''], zoneRows, { id: 'zones' }) : h('p', {}, 'No zones.'),
      zoneMsg),
    h('section', { className: 'card' }, h('h2', {}, 'Add a zone or curfew'), picker),
    h('section', { className: 'card' }, h('h2', {}, 'Record an absence'), absence));

  const mp = await makeMap(mapEl, api);
  for (const z of zones.items) {
    const zl = await geometryLayer(api, z.geometry, ZONE_STYLE[z.kind]);
    if (zl) { zl.bindTooltip(label(`${z.kind === 'inclusion' && z.schedule ? 'curfew' : z.kind}: ${z.name}`, scheduleText(z.schedule))); mp.layer.addLayer(zl); }
  }
  mp.fit();
  picker.append(await zoneForm(path, s, mp));
}

/** The add-zone form: kind (exclusion, inclusion, curfew), a shape, optional schedule. */
async function zoneForm(path, subject, mp) {
  const msg = notice();
  const kind = select('zone-kind', [['exclusion', 'exclusion (must stay out)'], ['inclusion', 'inclusion (must stay in)'], ['curfew', 'curfew (inclusion + schedule)']], 'exclusion');
  const name = h('input', { name: 'zone-name', id: 'zone-name', required: true, maxLength: 200 });
  const grace = h('input', { name: 'grace', id: 'grace', type: 'number', min: 0, max: 86400, value: 0 });
  const shape = select('shape', [['circle', 'circle — click the centre on the map'], ['polygon', 'polygon — click the corners on the map'], ['borough', 'a borough'], ['geojson', 'paste GeoJSON']], 'circle');
  const radius = h('input', { name: 'radius', id: 'radius', type: 'number', min: 1, value: 200 });
  const geojson = h('textarea', { name: 'geojson', id: 'geojson', rows: 5, placeholder: '{"type":"Polygon","coordinates":[[[lon,lat],…]]}' });
  const names = await boroughs(api).then((fc) => fc.features.map((f) => f.properties?.name).filter(Boolean).sort()).catch(() => []);
  const borough = select('borough', names, subject.borough ?? '', 'choose…');
  const clear = h('button', { type: 'button', className: 'small' }, 'Clear shape');
  const drawHint = h('small', { id: 'draw-hint' });
  const days = DAYS.map((d) => h('input', { type: 'checkbox', name: `day-${d}`, value: d, checked: true }));
  const start = h('input', { type: 'time', name: 'start', id: 'start', value: '19:00' });
  const end = h('input', { type: 'time', name: 'end', id: 'end', value: '07:00' });
  const tz = h('input', { name: 'tz', id: 'tz', value: subject.timezone ?? 'Europe/London' });
  const schedule = h('fieldset', { className: 'schedule', hidden: true }, h('legend', {}, 'Curfew schedule (local time; an end before the start ends next day)'),
    h('div', { className: 'days' }, days.map((c) => h('label', {}, c, c.value))), field('From', start), field('Until', end), field('Time zone', tz));

  // drawing state on the subject's map
  const draft = L.featureGroup().addTo(mp.map);
  let centre = null;
  let corners = [];
  const redraw = () => {
    draft.clearLayers();
    if (shape.value === 'circle' && centre) L.circle(centre, { radius: Number(radius.value) || 1, color: '#8e44ad', dashArray: '6 4' }).addTo(draft);
    if (shape.value === 'polygon' && corners.length) {
      (corners.length > 2 ? L.polygon(corners, { color: '#8e44ad', dashArray: '6 4' }) : L.polyline(corners, { color: '#8e44ad' })).addTo(draft);
    }
    drawHint.textContent = shape.value === 'circle' ? (centre ? `centre ${centre.lat.toFixed(5)}, ${centre.lng.toFixed(5)}` : 'click the map to place the centre')
      : shape.value === 'polygon' ? `${corners.length} corner(s) — at least 3` : '';
  };
  mp.map.on('click', (e) => {
    if (shape.value === 'circle') centre = e.latlng;
    else if (shape.value === 'polygon') corners.push(e.latlng);
    redraw();
  });
  clear.addEventListener('click', () => { centre = null; corners = []; redraw(); });
  const showParts = () => {
    radius.closest('label').hidden = shape.value !== 'circle';
    geojson.closest('label').hidden = shape.value !== 'geojson';
    borough.closest('label').hidden = shape.value !== 'borough';
    clear.hidden = !['circle', 'polygon'].includes(shape.value);
    schedule.hidden = kind.value !== 'curfew';
    redraw();
  };
  shape.addEventListener('change', showParts);
  kind.addEventListener('change', showParts);
  radius.addEventListener('input', redraw);

  const geometry = () => {
    switch (shape.value) {
      case 'circle':
        if (!centre) throw new Error('Click the map to place the circle’s centre.');
        return { type: 'Circle', center: [round(centre.lng), round(centre.lat)], radius_m: Number(radius.value) };
      case 'polygon': {
        if (corners.length < 3) throw new Error('Click at least three corners on the map.');
        const ring = corners.map((c) => [round(c.lng), round(c.lat)]);
        return { type: 'Polygon', coordinates: [[...ring, ring[0]]] };
      }
      case 'borough':
        if (!borough.value) throw new Error('Choose a borough.');
        return { type: 'Borough', name: borough.value };
      default: {
        let g;
        try { g = JSON.parse(geojson.value); } catch { throw new Error('The pasted text is not JSON.'); }
        if (g?.type === 'FeatureCollection') g = g.features?.[0];
        if (g?.type === 'Feature') g = g.geometry;
        return g;
      }
    }
  };

  const form = h('form', { id: 'zone-form' },
    h('div', { className: 'row' }, field('Kind', kind), field('Name', name), field('Grace (s)', grace, 'seconds inside/outside before an alert')),
    h('div', { className: 'row' }, field('Shape', shape), field('Radius (m)', radius), field('Borough', borough), clear),
    drawHint,
    field('GeoJSON geometry', geojson),
    schedule,
    h('button', { type: 'submit' }, 'Add zone'), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.clear();
    try {
      const body = { kind: kind.value === 'curfew' ? 'inclusion' : kind.value, name: name.value.trim(), grace_s: Number(grace.value) || 0, geometry: geometry() };
      if (kind.value === 'curfew') {
        const picked = days.filter((c) => c.checked).map((c) => c.value);
        if (!picked.length) throw new Error('Pick at least one day.');
        body.schedule = { timezone: tz.value.trim(), windows: [{ days: picked, start: start.value, end: end.value }] };
      }
      await api('POST', `${path}/zones`, body);
      route();
    } catch (err) { msg.fail(err); }
  });
  showParts();
  return form;
}

function round(x) {
  return Math.round(x * 1e6) / 1e6;
}

function absenceForm(path) {
  const now = new Date();
  const from = h('input', { type: 'datetime-local', name: 'abs-from', id: 'abs-from', required: true, value: localInput(now) });
  const to = h('input', { type: 'datetime-local', name: 'abs-to', id: 'abs-to', required: true, value: localInput(new Date(now.getTime() + 3 * 3600e3)) });
  const reason = h('input', { name: 'abs-reason', id: 'abs-reason', required: true, placeholder: 'e.g. Crown Court hearing' });
  const msg = notice();
  const form = h('form', { id: 'absence-form' }, h('div', { className: 'row' }, field('From', from), field('To', to), field('Reason', reason)),
    h('button', { type: 'submit' }, 'Record absence'), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('POST', `${path}/absences`, { from: rfc3339(from.value), to: rfc3339(to.value), reason: reason.value.trim() });
      msg.ok('Absence recorded: curfew rules will not raise alerts in that interval.');
      reason.value = '';
    } catch (err) { msg.fail(err); }
  });
  return form;
}

// ---------------------------------------------------------------------------------------
// Analysts: lawful location queries

async function queriesPage() {
  const signal = viewAbort.signal;
  const crimeRef = h('input', { name: 'crime_ref', id: 'crime_ref', required: true, placeholder: 'e.g. CAD 1234/23NOV' });
  const legalBasis = h('input', { name: 'legal_basis', id: 'legal_basis', required: true, placeholder: 'e.g. DPA 2018 s.35, prevention and detection of crime' });
  const reason = h('textarea', { name: 'reason', id: 'reason', required: true, rows: 2 });
  const justification = () => {
    const j = { crime_ref: crimeRef.value.trim(), legal_basis: legalBasis.value.trim(), reason: reason.value.trim() };
    if (!j.crime_ref || !j.legal_basis || !j.reason) throw new Error('Every query needs a crime reference, a legal basis and a reason.');
    return j;
  };
  const mapEl = h('div', { className: 'map tall', id: 'query-map' });
  const results = h('div', { id: 'results' });
  const tabs = h('div', { className: 'tabs', role: 'tablist' });
  const forms = h('div');
  render(signal, 
    h('section', { className: 'card' }, h('h1', {}, 'Lawful location queries'),
      h('p', { className: 'hint' }, 'Every query is recorded in the audit log with this justification before its answer is shown.'),
      h('fieldset', { className: 'justification' }, h('legend', {}, 'Justification'),
        h('div', { className: 'row' }, field('Crime reference', crimeRef), field('Legal basis', legalBasis)), field('Reason', reason))),
    h('section', { className: 'card' }, tabs, h('div', { className: 'split' },
      h('div', {}, forms, h('h2', {}, 'Results'), results), mapEl)));

  const mp = await makeMap(mapEl, api);
  const kinds = [
    ['scene', 'Crime scene', sceneForm],
    ['at-time', 'Location at time', atTimeForm],
    ['match', 'Crime match (CSV)', matchForm],
  ];
  const ctx = { mp, results, justification };
  const show = (key) => {
    mp.layer.clearLayers();
    for (const b of tabs.children) b.setAttribute('aria-selected', String(b.dataset.key === key));
    const [, , make] = kinds.find((k) => k[0] === key);
    forms.replaceChildren(make(ctx));
  };
  for (const [key, text] of kinds) {
    const b = h('button', { type: 'button', role: 'tab', dataset: { key }, id: `tab-${key}` }, text);
    b.addEventListener('click', () => show(key));
    tabs.append(b);
  }
  show('scene');
}

function sceneForm({ mp, results, justification }) {
  const now = new Date();
  const lat = h('input', { name: 'lat', id: 'scene-lat', type: 'number', step: 'any', required: true });
  const lon = h('input', { name: 'lon', id: 'scene-lon', type: 'number', step: 'any', required: true });
  const radius = h('input', { name: 'radius_m', id: 'scene-radius', type: 'number', min: 1, value: 100, required: true });
  const from = h('input', { type: 'datetime-local', id: 'scene-from', required: true, value: localInput(new Date(now.getTime() - 2 * 3600e3)) });
  const to = h('input', { type: 'datetime-local', id: 'scene-to', required: true, value: localInput(now) });
  const msg = notice();
  const scene = L.featureGroup().addTo(mp.layer);
  const drawScene = () => {
    scene.clearLayers();
    if (lat.value && lon.value) L.circle([Number(lat.value), Number(lon.value)], { radius: Number(radius.value) || 1, color: '#c0392b', className: 'tw-scene' }).addTo(scene);
  };
  const onClick = (e) => { lat.value = round(e.latlng.lat); lon.value = round(e.latlng.lng); drawScene(); };
  mp.map.off('click');
  mp.map.on('click', onClick);
  [lat, lon, radius].forEach((i) => i.addEventListener('input', drawScene));
  const form = h('form', { id: 'scene-form' },
    h('p', { className: 'hint' }, 'Click the map to place the scene, or type its position.'),
    h('div', { className: 'row' }, field('Latitude', lat), field('Longitude', lon), field('Radius (m)', radius)),
    h('div', { className: 'row' }, field('From', from), field('To', to)),
    h('button', { type: 'submit' }, 'Search'), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.clear();
    try {
      const body = { lat: Number(lat.value), lon: Number(lon.value), radius_m: Number(radius.value), from: rfc3339(from.value), to: rfc3339(to.value), justification: justification() };
      const r = await api('POST', '/v1/queries/crime-scene', body);
      drawScene();
      mp.fit();
      results.replaceChildren(
        h('p', {}, `${r.matches.length} subject(s) within ${body.radius_m} m. Audit entry ${r.audit_id}.`),
        matchTable(r.matches, 'scene-matches'));
    } catch (err) { msg.fail(err); }
  });
  return form;
}

function matchTable(matches, id) {
  return table(['Subject', 'Device', 'Closest approach (m)', 'At', 'Method', 'Fixes within'],
    matches.map((x) => h('tr', {},
      h('td', {}, x.subject_id), h('td', {}, x.device_id), h('td', { className: 'num' }, Number(x.closest_approach_m).toFixed(1)),
      h('td', {}, when(x.closest_at)), h('td', {}, x.method), h('td', { className: 'num' }, String(x.fixes_within)))),
    { id, className: 'matches' });
}

function atTimeForm({ mp, results, justification }) {
  const subject = h('input', { name: 'subject_id', id: 'at-subject', required: true });
  const at = h('input', { type: 'datetime-local', id: 'at-time', required: true, value: localInput(new Date()) });
  const msg = notice();
  mp.map.off('click');
  const form = h('form', { id: 'at-form' }, h('div', { className: 'row' }, field('Subject', subject), field('At', at)),
    h('button', { type: 'submit' }, 'Locate'), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.clear();
    try {
      const r = await api('POST', '/v1/queries/location-at-time', { subject_id: subject.value.trim(), at: rfc3339(at.value), justification: justification() });
      mp.layer.clearLayers();
      const est = r.estimate ?? {};
      for (const [f, name] of [[r.before, 'fix before'], [r.after, 'fix after']]) {
        if (f && f.lat !== null && f.lat !== undefined) mp.layer.addLayer(fixMarker(f.lat, f.lon, f.accuracy_m, '#7f8c8d', [name, when(f.ts)]));
      }
      if (est.method !== 'none' && est.lat !== null && est.lat !== undefined) {
        mp.layer.addLayer(fixMarker(est.lat, est.lon, est.uncertainty_m, '#c0392b', [`estimate (${est.method})`, `±${Math.round(est.uncertainty_m)} m`], 'tw-estimate'));
      }
      mp.fit();
      results.replaceChildren(dl([
        ['Subject', r.subject_id], ['At', when(r.at)], ['Method', est.method ?? '—'],
        ['Position', est.lat !== null && est.lat !== undefined ? `${est.lat}, ${est.lon}` : 'unknown'],
        ['Uncertainty (m)', est.uncertainty_m !== null && est.uncertainty_m !== undefined ? String(Math.round(est.uncertainty_m)) : '—'],
        ['Fix before', r.before ? when(r.before.ts) : '—'], ['Fix after', r.after ? when(r.after.ts) : '—'],
        ['Audit entry', String(r.audit_id)],
      ]));
    } catch (err) { msg.fail(err); }
  });
  return form;
}

function matchForm({ mp, results, justification }) {
  const file = h('input', { type: 'file', id: 'match-file', accept: '.csv,text/csv', required: true });
  const radius = h('input', { type: 'number', id: 'match-radius', min: 1, value: 200, required: true });
  const msg = notice();
  mp.map.off('click');
  const form = h('form', { id: 'match-form' },
    h('p', { className: 'hint' }, 'CSV with header ref,lat,lon,from,to[,category], or a data.police.uk street-level file.'),
    h('div', { className: 'row' }, field('Crimes (CSV)', file), field('Radius (m)', radius)),
    h('button', { type: 'submit' }, 'Match'), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.clear();
    try {
      const j = justification();
      const f = file.files[0];
      if (!f) throw new Error('Choose a CSV file.');
      const text = await f.text();
      const r = await api('POST', `/v1/queries/crime-match${qs({ radius_m: radius.value, ...j })}`, text, { contentType: 'text/csv' });
      mp.layer.clearLayers();
      const where = crimePositions(text);
      for (const res of r.results) {
        const p = where.get(res.ref);
        if (p) mp.layer.addLayer(fixMarker(p[0], p[1], Number(radius.value), res.matches.length ? '#c0392b' : '#7f8c8d', [res.ref, `${res.matches.length} match(es)`], 'tw-crime'));
      }
      mp.fit();
      results.replaceChildren(...r.results.map((res) => h('div', { className: 'crime' },
        h('h3', {}, `${res.ref}: ${res.matches.length} match(es) — audit entry ${res.audit_id}`),
        res.matches.length ? matchTable(res.matches) : null)));
    } catch (err) { msg.fail(err); }
  });
  return form;
}

/** ref → [lat, lon] from a crime CSV, to place the crimes on the map (best effort). */
function crimePositions(text) {
  const out = new Map();
  const lines = text.split(/\r?\n/).filter((l) => l.trim());
  if (!lines.length) return out;
  const cells = (l) => l.split(',').map((c) => c.trim().replace(/^"|"$/g, ''));
  const head = cells(lines[0]).map((c) => c.toLowerCase());
  const col = (...names) => head.findIndex((c) => names.includes(c));
  const [ref, lat, lon] = [col('ref', 'crime id'), col('lat', 'latitude'), col('lon', 'longitude')];
  if (ref < 0 || lat < 0 || lon < 0) return out;
  for (const l of lines.slice(1)) {
    const c = cells(l);
    const p = [Number(c[lat]), Number(c[lon])];
    if (c[ref] && p.every(Number.isFinite)) out.set(c[ref], p);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Auditors: the log and the chain check

async function auditPage(params) {
  const signal = viewAbort.signal;
  const from = h('input', { type: 'datetime-local', id: 'audit-from', value: params.get('from') ?? '' });
  const to = h('input', { type: 'datetime-local', id: 'audit-to', value: params.get('to') ?? '' });
  const actor = h('input', { id: 'audit-actor', value: params.get('actor') ?? '', placeholder: 'user id' });
  const subject = h('input', { id: 'audit-subject', value: params.get('subject_id') ?? '' });
  const filters = h('form', { className: 'filters', id: 'audit-filters' },
    field('From', from), field('To', to), field('Actor', actor), field('Subject', subject), h('button', { type: 'submit' }, 'Filter'));
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = `#/audit${qs({ from: from.value, to: to.value, actor: actor.value.trim(), subject_id: subject.value.trim() })}`;
  });
  const verifyBtn = h('button', { type: 'button', id: 'verify' }, 'Check the chain');
  const verdict = h('div', { id: 'verdict' });
  verifyBtn.addEventListener('click', async () => {
    verdict.replaceChildren(h('p', {}, 'Checking…'));
    try {
      const v = await api('GET', '/v1/audit/verify');
      verdict.replaceChildren(h('p', { className: `notice ${v.ok ? 'ok' : 'error'}`, id: 'verdict-text' },
        v.ok ? `Chain intact: ${v.entries} entries, head ${short(v.head_hash)}`
          : `Chain BROKEN at entry ${v.first_bad_id} (${v.entries} entries checked).`));
    } catch (e) { verdict.replaceChildren(h('p', { className: 'notice error' }, e.message)); }
  });
  const tbody = h('tbody', { id: 'audit-rows' });
  const more = h('button', { type: 'button', hidden: true }, 'Older entries');
  const msg = notice();
  render(signal, 
    h('section', { className: 'card' }, h('div', { className: 'titlebar' }, h('h1', {}, 'Audit log'), verifyBtn), verdict, filters,
      h('table', { className: 'audit' }, h('thead', {}, h('tr', {},
        ['#', 'When', 'Who', 'Action', 'Subjects disclosed', 'Justification', 'Parameters', 'Results', 'Hash'].map((t) => h('th', { scope: 'col' }, t)))), tbody),
      more, msg));
  const base = { from: rfc3339(params.get('from')), to: rfc3339(params.get('to')), actor: params.get('actor'), subject_id: params.get('subject_id') };
  let cursor = null;
  const load = async () => {
    const page = await api('GET', `/v1/audit${qs({ ...base, cursor })}`);
    for (const e of page.items) {
      const j = e.justification;
      tbody.append(h('tr', { dataset: { action: e.action } },
        h('td', {}, String(e.id)), h('td', {}, when(e.at)), h('td', {}, `${e.actor_name ?? '?'} (${e.role ?? '?'}, user ${e.actor ?? '?'})`),
        h('td', {}, e.action), h('td', {}, (e.subject_ids ?? []).join(', ') || '—'),
        h('td', {}, j ? [h('div', {}, j.crime_ref ?? ''), h('div', {}, j.legal_basis ?? ''), h('div', { className: 'hint' }, j.reason ?? '')] : '—'),
        h('td', {}, h('code', {}, e.parameters ? JSON.stringify(e.parameters) : '')),
        h('td', { className: 'num' }, e.result_count ?? '—'),
        h('td', {}, h('code', { title: e.hash ?? '' }, short(e.hash)))));
    }
    cursor = page.next_cursor ?? null;
    more.hidden = !cursor;
    if (!tbody.children.length) tbody.append(h('tr', {}, h('td', { colSpan: 9 }, 'No entries.')));
  };
  more.addEventListener('click', () => load().catch((e) => msg.fail(e)));
  await load();
}

route();
