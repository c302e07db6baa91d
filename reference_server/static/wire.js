// wire.js: everything this page puts on the network goes through here, so it can be counted.
//
// A page sees request and response bodies and WebSocket frame payloads. It never sees HTTP
// headers, WebSocket frame headers or TCP/TLS overhead, so those are not counted.

const utf8 = new TextEncoder();
export const byteLength = (text) => utf8.encode(text).length;

/** Counters for one transport, plus a short log of the latest requests and frames. */
export class Meter {
  constructor(onChange) {
    this.onChange = onChange;   // called with (meter, logLine | null) after every change
    this.reset();
  }

  reset() {
    Object.assign(this, { requests: 0, framesUp: 0, framesDown: 0, bytesUp: 0, bytesDown: 0,
                          emptyPolls: 0, since: Date.now() });
    this.onChange(this, null);
  }

  http(what, up, down, status) {
    this.requests += 1;
    this.bytesUp += up;
    this.bytesDown += down;
    this.onChange(this, `${what} ${status}  ${up ? `↑${up} ` : ''}↓${down} B`);
  }

  frameUp(type, bytes) {
    this.framesUp += 1;
    this.bytesUp += bytes;
    this.onChange(this, `WS ${type}  ↑${bytes} B`);
  }

  frameDown(type, bytes) {
    this.framesDown += 1;
    this.bytesDown += bytes;
    this.onChange(this, `WS ${type}  ↓${bytes} B`);
  }

  /** A line on the wire log that is not traffic (a backoff, a reconnect); counts nothing. */
  note(text) {
    this.onChange(this, text);
  }

  emptyPoll() {
    this.emptyPolls += 1;
    this.onChange(this, null);
  }
}

export class HttpError extends Error {
  constructor(status, data) {
    super(`HTTP ${status}: ${data?.message ?? data?.error ?? JSON.stringify(data)}`);
    this.status = status;
    this.data = data;
  }
}

/** JSON over HTTP with a bearer token. Throws HttpError for any status >= 400. */
export class Api {
  constructor(meter) {
    this.meter = meter;
    this.token = null;
  }

  async request(method, path, body, { signal } = {}) {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers = {};
    if (text !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token) headers['Authorization'] = `Bearer ${this.token}`;
    const res = await fetch(path, { method, headers, body: text, signal, cache: 'no-store' });
    const raw = await res.text();
    this.meter.http(`${method} ${path.split('?')[0]}`, text ? byteLength(text) : 0,
                    byteLength(raw), res.status);
    let data = null;
    try { data = raw ? JSON.parse(raw) : null; } catch { data = { error: raw }; }
    if (!res.ok) throw new HttpError(res.status, data);
    return data;
  }

  get(path, options) { return this.request('GET', path, undefined, options); }
  post(path, body, options) { return this.request('POST', path, body, options); }
}
