// app.js: the demo chat client. Read it top to bottom:
//   state -> login -> transport -> incoming events -> ticks and receipts -> sending -> rendering.
// The transports (transports.js) only move events; everything a user sees is decided here.

import { Api, Meter, HttpError } from './wire.js';
import { TRANSPORTS } from './transports.js';

const $ = (id) => document.getElementById(id);
const TICK_ORDER = ['pending', 'sent', 'delivered', 'read'];   // a tick only moves forward
const TICK_TEXT = { pending: '…', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };

// --- state ----------------------------------------------------------------------------------

const state = {
  me: null,
  cursor: '',            // the last event this page has handled; a reconnect resumes after it
  seen: new Set(),       // cursors already handled: a replayed event is dropped, not shown twice
  transport: null,
  open: null,            // the conversation on screen
  convs: new Map(),      // conversation id -> Conversation
  presence: new Map(),   // user -> 'online' | 'offline'
  outbox: new Map(),     // client_msg_id -> {message, conv, row}: not yet acknowledged
};

const meter = new Meter(renderMeter);
const api = new Api(meter);

class Conversation {
  constructor(id) {
    this.id = id;
    const [kind, a, b] = id.split(':');
    this.peer = kind !== 'dm' ? null : a === state.me ? b : a;
    this.el = document.createElement('ol');   // this conversation's rows, on screen when open
    this.el.className = 'rows';
    this.rows = new Map();                     // message id -> row
    this.lastIncoming = 0;                     // highest message id received from the peer
    this.receiptsSent = { delivered: 0, read: 0 };   // highest up_to this user reported
    this.peerReceipts = { delivered: 0, read: 0 };   // highest up_to the peer reported
    this.unread = 0;
  }
}

const dmId = (a, b) => `dm:${[a, b].sort().join(':')}`;

function conversation(id) {
  if (!state.convs.has(id)) {
    const conv = new Conversation(id);
    state.convs.set(id, conv);
    renderPeers();
    if (conv.peer) refreshPresence([conv.peer]);   // later changes arrive as presence events
  }
  return state.convs.get(id);
}

function newClientMsgId() {   // 32 hex digits; crypto.randomUUID() needs https or localhost
  return Array.from(crypto.getRandomValues(new Uint8Array(16)),
                    (b) => b.toString(16).padStart(2, '0')).join('');
}

// --- login ----------------------------------------------------------------------------------

async function login(user, password) {
  try {
    return await api.post('/api/login', { user, password });
  } catch (err) {
    if (!(err instanceof HttpError) || ![401, 404].includes(err.status)) throw err;
    await api.post('/api/register', { user, password });   // 409 here: taken, wrong password
    return api.post('/api/login', { user, password });
  }
}

$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const user = $('login-user').value.trim();
  $('login-error').textContent = '';
  try {
    const session = await login(user, $('login-password').value);
    api.token = session.token;
    state.me = user;
    $('whoami').textContent = `logged in as ${user}`;
    $('login').hidden = true;
    $('app').hidden = false;
    $('peer-input').focus();
    renderTransportFields();
    startTransport($('transport').value);
  } catch (err) {
    $('login-error').textContent = err.status === 409
      ? `"${user}" exists and that is not its password.` : err.message;
  }
});

// --- transport ------------------------------------------------------------------------------

const ctx = {
  api,
  meter,
  cursor: () => state.cursor,
  deliver,
  resync,
  status: renderStatus,
  pollInterval: () => Math.max(0.2, Number($('interval').value) || 2),
};

function startTransport(name) {
  state.transport?.stop();
  resetMeter();
  state.transport = new TRANSPORTS[name](ctx);
  state.transport.start();
  for (const entry of state.outbox.values()) sendVia(entry);   // what the old one did not confirm
  const peers = [...state.convs.values()].map((c) => c.peer).filter(Boolean);
  if (peers.length) refreshPresence(peers);
}

$('transport').addEventListener('change', () => {
  renderTransportFields();
  if (state.me) startTransport($('transport').value);
});

function resetMeter() {
  meter.reset();
  $('wire-log').replaceChildren();
}

$('meter-reset').addEventListener('click', resetMeter);
$('drop').addEventListener('click', () => {
  meter.note('drop  the page closes its WebSocket, as a network failure would');
  state.transport?.ws?.close(4000, 'dropped by the user');
});

// The server could not replay everything after our cursor (cursor too old, or a new log):
// go on from the cursor it gave us and reload the conversations from their history.
function resync(cursor) {
  state.cursor = cursor;
  for (const conv of state.convs.values()) loadHistory(conv);
}

// --- incoming events ------------------------------------------------------------------------

function deliver(events, cursor) {
  for (const ev of events) {
    if (state.seen.has(ev.cursor)) continue;   // a duplicate, replayed after a reconnect
    state.seen.add(ev.cursor);
    if (state.seen.size > 10000) state.seen.delete(state.seen.values().next().value);
    if (ev.type === 'message') {
      onMessage(ev);
      // Presence is by participation: the sender's first message is what lets us see it.
      if ((state.presence.get(ev.sender) ?? 'unknown') === 'unknown') refreshPresence([ev.sender]);
    }
    else if (ev.type === 'receipt') onReceipt(ev);
    else if (ev.type === 'presence') setPresence(ev.user, ev.status);
  }
  if (cursor) state.cursor = cursor;
  sendReceipts();
}

function onMessage(m) {
  const conv = conversation(m.conversation);
  if (m.sender === state.me) {   // our own message, echoed to every device of ours
    const entry = state.outbox.get(m.client_msg_id);
    state.outbox.delete(m.client_msg_id);
    const row = entry?.row ?? conv.rows.get(m.id) ?? addRow(conv, m);
    confirm(conv, row, m.id);
    return;
  }
  if (conv.rows.has(m.id)) return;
  // The server shows a user's presence only to members of a conversation it has written in:
  // a peer still 'unknown' to us becomes visible with its first message, so ask again.
  if (m.sender === conv.peer && (state.presence.get(conv.peer) ?? 'unknown') === 'unknown') {
    refreshPresence([conv.peer]);
  }
  addRow(conv, m);
  conv.lastIncoming = Math.max(conv.lastIncoming, m.id);
  if (conv !== state.open) { conv.unread += 1; renderPeers(); }
}

function onReceipt(r) {
  const conv = conversation(r.conversation);
  const seen = r.user === state.me ? conv.receiptsSent : conv.peerReceipts;   // ours: another tab
  seen[r.status] = Math.max(seen[r.status], r.up_to);
  if (r.status === 'read') seen.delivered = Math.max(seen.delivered, r.up_to);
  if (r.user !== state.me) applyReceipts(conv);
}

// --- ticks and receipts ---------------------------------------------------------------------

function advance(row, tick) {
  if (TICK_ORDER.indexOf(tick) <= TICK_ORDER.indexOf(row.dataset.state)) return;
  row.dataset.state = tick;
  row.querySelector('.ticks').textContent = TICK_TEXT[tick];
}

function applyReceipts(conv) {
  for (const [id, row] of conv.rows) {
    if (row.dataset.direction !== 'out') continue;
    if (id <= conv.peerReceipts.read) advance(row, 'read');
    else if (id <= conv.peerReceipts.delivered) advance(row, 'delivered');
  }
}

// The server stored our message as `id`: the row gets its first tick.
function confirm(conv, row, id) {
  row.dataset.id = id;
  conv.rows.set(id, row);
  advance(row, 'sent');
  applyReceipts(conv);   // a receipt may have overtaken the acknowledgement
  sortRows(conv);
}

// "delivered" for every conversation with news; "read" for the one on screen, if it is seen.
function sendReceipts() {
  for (const conv of state.convs.values()) {
    const visible = conv === state.open && document.visibilityState === 'visible';
    for (const status of visible ? ['delivered', 'read'] : ['delivered']) {
      const upTo = conv.lastIncoming;
      const before = conv.receiptsSent[status];
      if (upTo <= before) continue;
      conv.receiptsSent[status] = upTo;
      state.transport.receipt({ conversation: conv.id, up_to: upTo, status })
        .catch(() => { conv.receiptsSent[status] = before; });   // try again with the next event
    }
  }
}

document.addEventListener('visibilitychange', () => state.me && sendReceipts());

// --- sending --------------------------------------------------------------------------------

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const body = $('message-input').value.trim();
  const conv = state.open;
  if (!body || !conv) return;
  $('message-input').value = '';
  const message = conv.peer ? { to: conv.peer, body, client_msg_id: newClientMsgId() }
                            : { conversation: conv.id, body, client_msg_id: newClientMsgId() };
  const row = addRow(conv, { ...message, sender: state.me, sent_at: Date.now() });
  const entry = { message, conv, row };
  state.outbox.set(message.client_msg_id, entry);
  row.addEventListener('click', () => row.dataset.state === 'failed' && sendVia(entry));
  sendVia(entry);
});

function sendVia(entry) {
  const transport = state.transport;
  transport.send(entry.message).then((ack) => {
    state.outbox.delete(entry.message.client_msg_id);
    confirm(entry.conv, entry.row, ack.id);
  }, (err) => {
    if (transport !== state.transport || entry.row.dataset.id) return;   // resent, or stored
    entry.row.dataset.state = 'failed';
    entry.row.querySelector('.ticks').textContent = TICK_TEXT.failed;
    entry.row.title = `not sent (${err.message}): click to try again`;
  });
  if (entry.row.dataset.state === 'failed') {
    entry.row.dataset.state = 'pending';
    entry.row.querySelector('.ticks').textContent = TICK_TEXT.pending;
  }
}

// --- conversations, history, presence -------------------------------------------------------

$('peer-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('peer-input');
  const peer = input.value.trim();
  if (peer === state.me) {
    input.setCustomValidity('That is you: pick someone else.');
    input.reportValidity();
    return;
  }
  if (peer) openConversation(dmId(state.me, peer));
  input.value = '';
});
$('peer-input').addEventListener('input', () => $('peer-input').setCustomValidity(''));

function openConversation(id) {
  const conv = conversation(id);
  state.open = conv;
  conv.unread = 0;
  $('messages').replaceChildren(conv.el);
  $('message-input').disabled = $('send-button').disabled = false;
  $('message-input').focus();
  renderPeers();
  scrollDown();
  sendReceipts();
  loadHistory(conv);
}

async function loadHistory(conv) {
  let data;
  try {
    data = await api.get(`/api/conversations/${conv.id}/messages?limit=50`);
  } catch {
    return;   // a new conversation has no history yet
  }
  for (const m of data.messages ?? []) {
    if (conv.rows.has(m.id)) continue;
    const row = addRow(conv, m);
    if (m.sender === state.me) advance(row, 'sent');
    else conv.lastIncoming = Math.max(conv.lastIncoming, m.id);
  }
  for (const [user, marks] of Object.entries(data.receipts ?? {})) {   // {user: {delivered, read}}
    const known = user === state.me ? conv.receiptsSent : conv.peerReceipts;
    for (const status of ['delivered', 'read']) known[status] = Math.max(known[status], marks[status]);
  }
  applyReceipts(conv);
  sortRows(conv);
  sendReceipts();
}

// 'online', 'offline', or 'unknown' for someone who has not written to us (or does not exist).
function refreshPresence(users) {
  if (!users.length) return;
  api.get(`/api/presence?users=${users.join(',')}`)
    .then((data) => { for (const user of users) setPresence(user, data.presence[user]); })
    .catch(() => {});   // the dots stay as they are
}

function setPresence(user, status) {
  state.presence.set(user, status);
  renderPeers();
}

// --- rendering ------------------------------------------------------------------------------

function addRow(conv, m) {
  const out = m.sender === state.me;
  const row = document.createElement('li');
  row.dataset.testid = 'message';
  row.dataset.direction = out ? 'out' : 'in';
  row.dataset.clientMsgId = m.client_msg_id ?? '';
  if (m.id) { row.dataset.id = m.id; conv.rows.set(m.id, row); }
  const body = document.createElement('span');
  body.className = 'body';
  body.dataset.testid = 'message-body';
  body.textContent = m.body;   // textContent, never innerHTML: bodies are untrusted
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = new Date(m.sent_at)
    .toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
  row.append(body, meta);
  if (out) {
    const ticks = document.createElement('span');
    ticks.className = 'ticks';
    ticks.dataset.testid = 'ticks';
    meta.append(' ', ticks);
    row.dataset.state = 'pending';
    ticks.textContent = TICK_TEXT.pending;
  }
  conv.el.append(row);
  if (conv === state.open) scrollDown();
  return row;
}

function sortRows(conv) {   // by message id; rows still waiting for an id stay at the bottom
  const key = (row) => Number(row.dataset.id || Infinity);
  const rows = [...conv.el.children];
  if (rows.every((r, i) => i === 0 || key(rows[i - 1]) <= key(r))) return;
  conv.el.append(...rows.sort((a, b) => key(a) - key(b)));
}

function scrollDown() {
  const box = $('messages');
  box.scrollTop = box.scrollHeight;
}

function dot(user, testid) {
  const d = document.createElement('span');
  d.className = 'dot';
  d.dataset.testid = testid;
  d.dataset.user = user;
  d.dataset.status = state.presence.get(user) ?? 'unknown';
  d.title = d.dataset.status;
  return d;
}

function renderPeers() {
  const items = [...state.convs.values()].map((conv) => {
    const li = document.createElement('li');
    li.dataset.testid = 'peer';
    li.dataset.user = conv.peer ?? conv.id;
    li.classList.toggle('open', conv === state.open);
    if (conv.peer) li.append(dot(conv.peer, 'presence-dot'));
    li.append(` ${conv.peer ?? conv.id}`);
    if (conv.unread) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = conv.unread;
      li.append(badge);
    }
    li.addEventListener('click', () => openConversation(conv.id));
    return li;
  });
  $('peer-list').replaceChildren(...items);
  const conv = state.open;
  if (!conv) return;
  const title = [` ${conv.peer ?? conv.id}`];
  if (conv.peer) title.unshift(dot(conv.peer, 'chat-presence-dot'));
  $('chat-title').replaceChildren(...title);
}

function renderStatus(connection, detail = '') {
  $('conn').dataset.state = connection;
  // A backoff shows its delay on the badge itself, so a room can read it off the projector.
  $('conn').textContent = connection.replace('_', ' ') + (connection === 'backing_off' && detail ? `: ${detail}` : '');
  $('conn').title = detail;
}

function renderTransportFields() {
  $('interval-field').hidden = $('transport').value !== 'short_polling';
  $('drop').hidden = !state.me || $('transport').value !== 'websocket';
}

function renderMeter(m, line) {
  $('count-requests').textContent = m.requests;
  $('count-frames-up').textContent = m.framesUp;
  $('count-frames-down').textContent = m.framesDown;
  $('count-bytes-up').textContent = m.bytesUp.toLocaleString('en');
  $('count-bytes-down').textContent = m.bytesDown.toLocaleString('en');
  $('count-empty-polls').textContent = m.emptyPolls;
  if (line === null) return;
  const li = document.createElement('li');
  li.textContent = li.title = `${new Date().toLocaleTimeString([], { hour12: false })}  ${line}`;
  $('wire-log').prepend(li);
  while ($('wire-log').children.length > 40) $('wire-log').lastChild.remove();
}

setInterval(() => {
  $('count-since').textContent = `${Math.round((Date.now() - meter.since) / 1000)} s`;
}, 1000);
renderTransportFields();

// --- instructor (open the page with #instructor; the server needs --instructor-key) -----------

const showInstructor = () => { $('instructor').hidden = location.hash !== '#instructor'; };
showInstructor();
window.addEventListener('hashchange', showInstructor);

async function outage(down) {
  const body = { key: $('instructor-key').value, down };
  const forS = Number($('instructor-for').value);
  if (down && forS > 0) body.for_s = forS;
  try {
    const r = await api.post('/api/instructor/outage', body);
    $('instructor-state').textContent = r.down
      ? `server DOWN${r.for_s ? ` for ${r.for_s} s` : ''}: ${r.connections_cut} connections cut`
      : 'server up';
  } catch (err) {
    $('instructor-state').textContent = `refused: ${err.message}`;
  }
  $('instructor-state').dataset.down = String(down);
}

$('instructor-down').addEventListener('click', () => outage(true));
$('instructor-up').addEventListener('click', () => outage(false));

// For the browser test and for poking around in the devtools console.
window.chatlab = { state, meter, api };
