// transports.js: three ways to receive events, one interface.
//
//   const t = new WebSocketTransport(ctx);  // or ShortPolling / LongPolling
//   t.start();  t.send({to, body, client_msg_id}) -> Promise<ack>;  t.receipt({...});  t.stop();
//
// ctx (provided by app.js):
//   api          Api from wire.js          meter        Meter from wire.js
//   cursor()     the last cursor the app has seen ('' = from the start)
//   deliver(events, cursor)  hand events to the app (it drops duplicates by cursor)
//   resync(cursor)           the server could not replay everything: reload, go on from cursor
//   status(state, detail)    'connecting' | 'connected' | 'backing_off' | 'disconnected'
//   pollInterval()           seconds between short polls

import { byteLength } from './wire.js';

const LONG_POLL_TIMEOUT_S = 25;
// The reconnect policy of the simulation and the Python client: chatcore/backoff.py's
// full_jitter with chatcore/params.py's backoff_base_s and backoff_cap_s (a Python test
// checks these two numbers against them).
export const BACKOFF_BASE_S = 1;
export const BACKOFF_CAP_S = 30;

/** Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)). */
export function fullJitter(attempt, base = BACKOFF_BASE_S, cap = BACKOFF_CAP_S) {
  return Math.random() * backoffWindow(attempt, base, cap);
}

function backoffWindow(attempt, base = BACKOFF_BASE_S, cap = BACKOFF_CAP_S) {
  return Math.min(cap, base * 2 ** attempt);
}

/** Draw the delay before retry number attempt + 1, show it in the status and on the wire log. */
function backOff(ctx, attempt, why) {
  const delay = fullJitter(attempt);
  ctx.status('backing_off', `retry ${attempt + 1} in ${delay.toFixed(1)} s`);
  ctx.meter.note(`backoff  ${why}: retry ${attempt + 1} in ${delay.toFixed(2)} s ` +
                 `= U(0, ${backoffWindow(attempt)} s) full jitter`);
  return delay;
}

/** The first good answer after failures: say on the wire log how long the page was away. */
function backOnline(ctx, attempts, since) {
  if (attempts > 0) {
    ctx.meter.note(`reconnected after ${attempts} ${attempts === 1 ? 'retry' : 'retries'}, ` +
                   `${((Date.now() - since) / 1000).toFixed(1)} s away; resumed from ${ctx.cursor() || 'the start'}`);
  }
}

function sleep(seconds, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Retry an idempotent request (a send carries its client_msg_id, so a retry is safe). */
async function withRetries(request, signal, attempts = 5) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await request();
    } catch (err) {
      const retryable = !err.status || err.status === 429 || err.status >= 500;
      if (!retryable || attempt + 1 >= attempts || signal.aborted) throw err;
      await sleep(fullJitter(attempt), signal);
    }
  }
}

// --- HTTP polling -------------------------------------------------------------------------

class Polling {
  constructor(ctx, long) {
    this.ctx = ctx;
    this.long = long;
  }

  start() {
    this.abort = new AbortController();
    this.loop();
  }

  stop() {
    this.abort.abort();
    this.ctx.status('disconnected');
  }

  async loop() {
    const { ctx } = this;
    const signal = this.abort.signal;
    let attempt = 0;
    let downSince = 0;
    let caughtUp = false;   // a long poll answers at once until we are connected
    ctx.status('connecting');
    while (!signal.aborted) {
      const query = new URLSearchParams();
      if (ctx.cursor()) query.set('after', ctx.cursor());   // no cursor yet: from the start
      if (this.long) query.set('timeout', caughtUp ? LONG_POLL_TIMEOUT_S : 0);
      const path = `/api/${this.long ? 'longpoll' : 'poll'}?${query}`;
      try {
        const { events, cursor } = await ctx.api.get(path, { signal });
        backOnline(ctx, attempt, downSince);
        attempt = 0;
        caughtUp = true;
        ctx.status('connected');
        if (events.length === 0) ctx.meter.emptyPoll();
        ctx.deliver(events, cursor);
      } catch (err) {
        if (signal.aborted) return;
        if (err.status === 410 && err.data?.cursor) {   // cursor_expired: history is gone
          ctx.resync(err.data.cursor);
          continue;
        }
        if (attempt === 0) downSince = Date.now();
        const delay = backOff(ctx, attempt++, err.message);
        caughtUp = false;
        await sleep(delay, signal);
        continue;
      }
      if (!this.long) await sleep(ctx.pollInterval(), signal);
    }
  }

  send(message) {
    return withRetries(() => this.ctx.api.post('/api/messages', message), this.abort.signal);
  }

  receipt(receipt) {
    return withRetries(() => this.ctx.api.post('/api/receipts', receipt), this.abort.signal);
  }
}

export class ShortPolling extends Polling { constructor(ctx) { super(ctx, false); } }
export class LongPolling extends Polling { constructor(ctx) { super(ctx, true); } }

// --- WebSocket ----------------------------------------------------------------------------

export class WebSocketTransport {
  constructor(ctx) {
    this.ctx = ctx;
    this.pending = new Map();   // client_msg_id -> {frame, resolve, reject}: sent, not acked yet
    this.receipts = [];         // receipt frames waiting for a connection
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.ws?.close(1000, 'transport changed');
    for (const p of this.pending.values()) p.reject(new Error('transport stopped'));
    this.pending.clear();
    this.ctx.status('disconnected');
  }

  connect() {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
    const ws = this.ws = new WebSocket(url);
    this.ready = false;
    this.ctx.status('connecting');
    ws.onopen = () => {
      this.frame({ type: 'auth', token: this.ctx.api.token });   // never put a token in a URL
      const after = this.ctx.cursor();   // no cursor yet: from the start
      this.frame(after ? { type: 'resume', after } : { type: 'resume' });
    };
    ws.onmessage = (e) => { if (ws === this.ws) this.onFrame(e.data); };   // ignore a replaced socket
    ws.onclose = (e) => {
      if (ws !== this.ws || this.stopped) return;
      this.ready = false;
      if (e.code === 4001) {   // the server refused our token: retrying will not help
        this.ctx.status('disconnected', `token refused (${e.reason}): log in again`);
        return;
      }
      if (this.attempt === 0) this.downSince = Date.now();
      const delay = backOff(this.ctx, this.attempt++, `closed (${e.code}${e.reason ? ` ${e.reason}` : ''})`);
      this.retryTimer = setTimeout(() => this.connect(), delay * 1000);
    };
  }

  frame(obj) {
    // Only an open socket takes frames; the caller keeps what did not go out (sends stay in
    // `pending`, receipts in `receipts`) and it leaves after the next 'resumed'.
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    const text = JSON.stringify(obj);
    this.ws.send(text);
    this.ctx.meter.frameUp(obj.type, byteLength(text));
    return true;
  }

  onFrame(text) {
    const f = JSON.parse(text);
    this.ctx.meter.frameDown(f.type, byteLength(text));
    switch (f.type) {
      case 'resumed':
        this.ready = true;
        backOnline(this.ctx, this.attempt, this.downSince);
        this.attempt = 0;   // the backoff starts again from base after a good connection
        this.ctx.status('connected');
        if (!f.recovered && this.ctx.cursor()) this.ctx.resync(f.cursor);
        for (const p of this.pending.values()) this.frame(p.frame);   // resend what was not acked
        for (const r of this.receipts.splice(0)) if (!this.frame(r)) this.receipts.push(r);
        break;
      case 'ack': {
        const p = this.pending.get(f.client_msg_id);
        this.pending.delete(f.client_msg_id);
        p?.resolve(f);
        break;
      }
      case 'error': {
        this.ctx.status(this.ready ? 'connected' : 'connecting', `server error: ${f.error}`);
        const p = this.pending.get(f.client_msg_id);   // a refused send, if the server says which
        this.pending.delete(f.client_msg_id);
        p?.reject(new Error(f.error));
        break;
      }
      case 'message': case 'receipt': case 'presence':
        this.ctx.deliver([f], f.cursor);
        break;
      default:   // a frame type this page does not know: ignore it
    }
  }

  send(message) {
    return new Promise((resolve, reject) => {
      const frame = { type: 'send', ...message };
      this.pending.set(message.client_msg_id, { frame, resolve, reject });
      if (this.ready) this.frame(frame);   // otherwise it goes out after the next 'resumed'
    });
  }

  receipt(receipt) {
    const frame = { type: 'receipt', ...receipt };
    if (!(this.ready && this.frame(frame))) this.receipts.push(frame);
    return Promise.resolve();
  }
}

export const TRANSPORTS = {
  short_polling: ShortPolling,
  long_polling: LongPolling,
  websocket: WebSocketTransport,
};
