// The timeline page: the workspace list, live from GET /v1/events?follow=1,
// and one workspace's timeline from its events and outcomes streams, one
// lane per generation. Everything is read through the HTTP API with the
// bearer token; nothing here is trusted more than any other API client.
'use strict';

const TOKEN_KEY = 'turnstile.token';
const FAILURES = new Set(['workspace.provision_failed', 'workspace.stop_failed', 'workspace.delete_failed',
  'workspace.container_exited', 'workspace.deadline_exceeded']);

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}
class NotFound extends Error {}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

// takeFragment moves a token given as /#token=... into sessionStorage and
// off the address bar (and so out of the history and of screenshots). The
// fragment is never sent to the server.
function takeFragment() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (!h.has('token')) return;
  sessionStorage.setItem(TOKEN_KEY, h.get('token'));
  h.delete('token');
  const rest = h.toString();
  history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
}

function selected() { return new URLSearchParams(location.hash.slice(1)).get('ws') || ''; }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === '') continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

async function api(path, signal) {
  const r = await fetch(path, { headers: { Authorization: 'Bearer ' + token() }, signal, cache: 'no-store' });
  if (r.status === 401) throw new Unauthorized();
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.message || 'HTTP ' + r.status);
  return body;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// follow reads a Server-Sent Events stream with fetch, since EventSource
// cannot send Authorization. It calls onItem with each data object and
// reconnects with Last-Event-ID, as EventSource would, until signal ends.
async function follow(path, onItem, onState, signal) {
  let lastId = '';
  let retry = 1000;
  while (!signal.aborted) {
    try {
      const headers = { Authorization: 'Bearer ' + token(), Accept: 'text/event-stream' };
      if (lastId) headers['Last-Event-ID'] = lastId;
      const r = await fetch(path, { headers, signal, cache: 'no-store' });
      if (r.status === 401) throw new Unauthorized();
      if (!r.ok) {
        const b = await r.json().catch(() => ({}));
        // A missing workspace or a bad id (400) stays so: shown, not retried.
        throw new (r.status === 404 || r.status === 400 ? NotFound : Error)(b.message || 'HTTP ' + r.status);
      }
      onState('live', '');
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let id = null;
          const data = [];
          for (const raw of block.split('\n')) {
            const line = raw.replace(/\r$/, '');
            if (line === '' || line.startsWith(':')) continue;
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (field === 'id') id = val;
            else if (field === 'data') data.push(val);
            else if (field === 'retry' && /^\d+$/.test(val)) retry = Number(val);
          }
          if (id !== null) lastId = id;
          if (data.length) onItem(JSON.parse(data.join('\n')));
        }
      }
      onState('retrying', 'the stream ended');
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof Unauthorized || e instanceof NotFound) throw e;
      onState('retrying', e.message);
    }
    await sleep(retry, signal);
  }
}

function age(since, now) {
  if (!since) return '?';
  const s = Math.max(0, Math.floor((now - since) / 1000));
  if (s < 120) return s + 's';
  if (s < 7200) return Math.floor(s / 60) + 'm';
  if (s < 172800) return Math.floor(s / 3600) + 'h';
  return Math.floor(s / 86400) + 'd';
}

function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? '' : d.toISOString().slice(11, 23);
}

// ---- the workspace list

const workspaces = new Map(); // id -> {id, status, generation, created (ms)}

function upsertRow(w) {
  const tbody = $('workspaces');
  let tr = tbody.querySelector(`tr[data-ws="${CSS.escape(w.id)}"]`);
  if (!tr) {
    tr = el('tr', { 'data-ws': w.id },
      el('td', { class: 'id' }, el('a', { href: '#ws=' + encodeURIComponent(w.id), text: w.id })),
      el('td', { class: 'state' }), el('td', { class: 'gen' }), el('td', { class: 'age' }));
    const after = [...tbody.children].find((r) => r.dataset.ws > w.id);
    tbody.insertBefore(tr, after || null);
  }
  tr.dataset.state = w.status;
  tr.classList.toggle('selected', w.id === selected());
  const st = tr.querySelector('.state');
  st.textContent = w.status;
  st.dataset.state = w.status;
  tr.querySelector('.gen').textContent = String(w.generation);
  const a = tr.querySelector('.age');
  a.dataset.since = w.created ? String(w.created) : '';
  a.title = w.created ? new Date(w.created).toISOString() : '';
  a.textContent = age(w.created, Date.now());
  $('list-empty').hidden = workspaces.size > 0;
  if (w.id === selected()) showState(w.status);
}

function applyEvent(ev) {
  const w = workspaces.get(ev.workspace) || { id: ev.workspace, status: '', generation: 0, created: 0 };
  w.status = ev.to;
  w.generation = ev.generation;
  if (ev.type === 'workspace.created') w.created = Date.parse(ev.time);
  workspaces.set(w.id, w);
  upsertRow(w);
}

// watchList keeps the list live; a failure other than a refused token
// (serve restarting, no read model yet) is retried.
async function watchList(signal) {
  while (!signal.aborted) {
    try {
      await listOnce(signal);
    } catch (e) {
      if (signal.aborted || e instanceof Unauthorized) throw e;
      setConn('retrying', e.message);
    }
    await sleep(2000, signal);
  }
}

async function listOnce(signal) {
  workspaces.clear();
  $('workspaces').replaceChildren();
  // The list and the checkpoint it reflects, then every event after it.
  let after = '';
  let checkpoint = null;
  do {
    const page = await api('/v1/workspaces?limit=1000' + (after ? '&after=' + encodeURIComponent(after) : ''), signal);
    checkpoint = checkpoint === null ? page.checkpoint : Math.min(checkpoint, page.checkpoint);
    for (const r of page.workspaces) {
      const w = { id: r.id, status: r.status, generation: r.generation, created: r.created_at ? Date.parse(r.created_at) : 0 };
      workspaces.set(w.id, w);
      upsertRow(w);
    }
    after = page.next || '';
  } while (after);
  $('list-empty').hidden = workspaces.size > 0;
  await follow('/v1/events?follow=1&after=' + checkpoint, applyEvent, setConn, signal);
}

function setConn(state, why) {
  const c = $('conn');
  c.dataset.state = state;
  c.textContent = state === 'live' ? 'live' : 'reconnecting: ' + why;
}

// ---- one workspace's timeline

let timeline = null; // {id, entries: Map, abort: AbortController}

function entryOfEvent(ev) {
  const failure = FAILURES.has(ev.type);
  const detail = [];
  if (ev.reason) detail.push(ev.reason);
  const code = 'code ' + ev.exit_code;
  if (ev.exit_code !== undefined && ev.exit_code !== null && !(ev.reason || '').includes(code)) detail.push('exit ' + code);
  return {
    key: 'e' + ev.seq, streamSeq: ev.stream_seq, gen: ev.generation, kind: failure ? 'failure' : 'event', time: ev.time,
    title: ev.type.replace(/^workspace\./, ''), type: ev.type, change: (ev.from || 'none') + ' → ' + ev.to,
    cause: ev.cause, detail: detail.join('; '), code: '',
  };
}

function entryOfOutcome(o) {
  if (o.outcome === 'accepted') return null; // its event is on the timeline
  const e = {
    key: 'o' + o.stream_seq, streamSeq: o.stream_seq, gen: o.generation, time: o.decided_at, type: o.command,
    change: 'state stays ' + o.state, cause: o.cause, detail: o.reason || '', code: '',
  };
  switch (o.outcome) {
    case 'rejected':
      e.kind = 'refused';
      e.title = o.command + ' refused';
      if (o.rejection) {
        e.code = o.rejection.code;
        e.detail = o.rejection.message;
      }
      break;
    case 'stale':
      e.kind = 'stale';
      e.gen = o.command_generation || o.generation;
      e.title = o.command + ' (stale report)';
      break;
    default:
      e.kind = 'noop';
      e.title = o.command + ': no-op';
  }
  return e;
}

function addEntry(e) {
  if (!e || !timeline) return;
  timeline.entries.set(e.key, e);
  if (!timeline.pending) {
    timeline.pending = true;
    requestAnimationFrame(renderTimeline);
  }
}

function renderTimeline() {
  if (!timeline) return;
  timeline.pending = false;
  const entries = [...timeline.entries.values()].sort((a, b) => a.streamSeq - b.streamSeq);
  const gens = [...new Set(entries.map((e) => e.gen))].sort((a, b) => a - b);
  const lanes = $('lanes');
  lanes.replaceChildren();
  lanes.style.gridTemplateColumns = `7.5em repeat(${Math.max(gens.length, 1)}, minmax(15em, 1fr))`;
  const col = new Map(gens.map((g, i) => [g, i + 2]));
  gens.forEach((g) => {
    const h = el('div', { class: 'lane-head', 'data-gen': String(g), text: 'generation ' + g });
    h.style.gridColumn = String(col.get(g));
    h.style.gridRow = '1';
    lanes.append(h);
  });
  entries.forEach((e, i) => {
    const row = String(i + 2);
    const t = el('div', { class: 'when', text: clock(e.time), title: e.time });
    t.style.gridRow = row;
    t.style.gridColumn = '1';
    const cause = e.cause ? `${e.cause.kind}: ${e.cause.command}` + (e.cause.actor ? ' by ' + e.cause.actor : '') : '';
    const card = el('div', { class: 'entry ' + e.kind, 'data-kind': e.kind, 'data-gen': String(e.gen), 'data-type': e.type, 'data-code': e.code },
      el('div', { class: 'title' }, el('strong', { text: e.title }), e.code ? el('span', { class: 'code', text: e.code }) : null),
      el('div', { class: 'change', text: e.change }),
      cause ? el('div', { class: 'cause', text: cause }) : null,
      e.detail ? el('div', { class: 'detail', text: e.detail }) : null);
    card.style.gridRow = row;
    card.style.gridColumn = String(col.get(e.gen));
    lanes.append(t, card);
  });
}

function showState(status) {
  const s = $('tl-state');
  s.textContent = status || '';
  s.dataset.state = status || '';
}

function openTimeline(parent) {
  const id = selected();
  if (timeline && timeline.id === id) return;
  if (timeline) timeline.abort.abort();
  timeline = null;
  for (const tr of $('workspaces').children) tr.classList.toggle('selected', tr.dataset.ws === id);
  $('timeline').hidden = !id;
  $('lanes').replaceChildren();
  if (!id) return;
  const abort = new AbortController();
  parent.addEventListener('abort', () => abort.abort(), { once: true });
  timeline = { id, entries: new Map(), abort, pending: false };
  $('tl-id').textContent = id;
  $('tl-note').textContent = '';
  showState(workspaces.has(id) ? workspaces.get(id).status : '');
  const base = '/v1/workspaces/' + encodeURIComponent(id);
  const note = (state, why) => { $('tl-note').textContent = state === 'live' ? '' : 'reconnecting: ' + why; };
  const failed = (e) => {
    if (e instanceof NotFound) $('tl-note').textContent = e.message;
    else if (!abort.signal.aborted) signOut(e);
  };
  for (const [path, entry] of [[base + '/events?follow=1', entryOfEvent], [base + '/outcomes?follow=1', entryOfOutcome]]) {
    follow(path, (x) => addEntry(entry(x)), note, abort.signal).catch(failed);
  }
}

// ---- sign in and out

let session = null; // AbortController of everything running

function showLogin(msg) {
  $('app').hidden = true;
  $('forget').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = msg || '';
  $('token-input').focus();
}

function signOut(err) {
  if (session) session.abort();
  session = null;
  timeline = null;
  if (err instanceof Unauthorized) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('The API refused this token: give the one in <data-dir>/api-token.');
    return;
  }
  if (err) showLogin('Cannot read the API: ' + err.message);
}

function start() {
  takeFragment();
  if (session) session.abort();
  timeline = null; // aborted with the session: open it again
  if (!token()) {
    showLogin('');
    return;
  }
  session = new AbortController();
  const s = session;
  $('login').hidden = true;
  $('app').hidden = false;
  $('forget').hidden = false;
  openTimeline(s.signal);
  watchList(s.signal).catch((e) => { if (!s.signal.aborted) signOut(e); });
}

document.addEventListener('DOMContentLoaded', () => {
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
    $('token-input').value = '';
    start();
  });
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    signOut(null);
    showLogin('');
  });
  window.addEventListener('hashchange', () => {
    if (new URLSearchParams(location.hash.slice(1)).has('token')) start();
    else if (session) openTimeline(session.signal);
  });
  setInterval(() => {
    const now = Date.now();
    for (const a of document.querySelectorAll('td.age')) a.textContent = age(Number(a.dataset.since), now);
  }, 1000);
  start();
});
