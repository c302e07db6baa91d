// The load generator of `make bench-server`: one Node.js process that drives any of the four
// servers with the same workload, through a thin adapter per protocol.
//
//   node loadgen.mjs CONFIG.json
//
// CONFIG (written by benchmarks/server/orchestrate.py):
//   mode        "run" (one offered level) or "idle" (connect, report, hold until stdin says stop)
//   protocol    "chatlab-ws" | "chatlab-longpoll" | "sio-ws" | "sio-polling"
//   url         http://127.0.0.1:PORT of the server under test
//   users       user names; tokens: their bearer tokens (chatlab-* only)
//   rate, warmup_s, measure_s, drain_s, seed, payload_bytes      (mode "run")
//   connect_concurrency, connect_timeout_s, longpoll_timeout_s, server_pid
//
// Workload (mode "run"): Poisson arrivals at `rate` per second for warmup_s + measure_s, each
// from a uniformly random client to a uniformly random *other* client, drawn from a seeded
// generator (xoshiro128**) so that every server sees exactly the same sends at the same
// offsets. A send's latency is the recipient's arrival time minus the time the send was
// handed to the socket, both on this process's monotonic clock (performance.now()).
// Refused sends (an error frame or HTTP error: "overloaded", "rate_limited", ...) are
// counted by code and never resent.
//
// Output: one JSON object on stdout (mode "run": the level's measurements; mode "idle": a
// line when every client is connected, another when they are closed). Progress on stderr.
import fs from "node:fs";
import http from "node:http";
import readline from "node:readline";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import { io } from "socket.io-client";

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const say = (s) => process.stderr.write(`loadgen: ${s}\n`);
const now = () => performance.now();

// --- seeded randomness ----------------------------------------------------------------
function splitmix32(a) {
  return () => {
    a |= 0; a = (a + 0x9e3779b9) | 0;
    let t = a ^ (a >>> 16); t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15; t = Math.imul(t, 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
}
function xoshiro128ss(seed) {
  const sm = splitmix32(seed);
  let a = sm(), b = sm(), c = sm(), d = sm();
  return () => {
    const r = Math.imul(((Math.imul(b, 5) << 7) | (Math.imul(b, 5) >>> 25)), 9);
    const t = b << 9;
    c ^= a; d ^= b; b ^= c; a ^= d; c ^= t; d = (d << 11) | (d >>> 21);
    return (r >>> 0) / 4294967296;
  };
}

/** Send times (ms after time zero), senders and recipients of one offered level. */
function schedule(nClients, rate, durationS, seed) {
  const rnd = xoshiro128ss((seed * 1000003 + Math.round(rate)) | 0);
  const time = [], from = [], to = [];
  let t = 0;
  for (;;) {
    t += -Math.log(1 - rnd()) / rate;
    if (t >= durationS) break;
    const s = Math.floor(rnd() * nClients);
    let r = Math.floor(rnd() * (nClients - 1));
    if (r >= s) r += 1;
    time.push(t * 1000); from.push(s); to.push(r);
  }
  return { time: Float64Array.from(time), from: Int32Array.from(from), to: Int32Array.from(to) };
}

// --- /proc of the server ----------------------------------------------------------------
const TICKS = 100; // USER_HZ on Linux
const PAGE = 4096;
function serverCpu(pid = cfg.server_pid) {
  if (!pid) return NaN;
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / TICKS;
  } catch { return NaN; }
}
function serverRss() {
  try { return Number(fs.readFileSync(`/proc/${cfg.server_pid}/statm`, "utf8").split(" ")[1]) * PAGE; } catch { return NaN; }
}

/** Busy and total ticks of each CPU (/proc/stat), busy including steal: time a CPU was not
 * ours to use. With the server alone on CPU 0 and the load generator alone on CPU 1, busy
 * minus their own CPU time is what other processes (or the hypervisor) took. */
function cpuTicks() {
  const out = {};
  try {
    for (const line of fs.readFileSync("/proc/stat", "utf8").split("\n")) {
      const m = /^cpu(\d+) (.*)$/.exec(line);
      if (!m) continue;
      const v = m[2].trim().split(/\s+/).map(Number);
      const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
      out[m[1]] = { busy: total - v[3] - v[4], total };
    }
  } catch { /* not Linux */ }
  return out;
}
function cpuBusy(a, b, cpu) {
  if (!a[cpu] || !b[cpu]) return null;
  const dt = b[cpu].total - a[cpu].total;
  return dt > 0 ? (b[cpu].busy - a[cpu].busy) / dt : null;
}

// --- the measurement ------------------------------------------------------------------------
class Tally {
  constructor(n) {
    this.sendAt = new Float64Array(n).fill(NaN);
    this.ackAt = new Float64Array(n).fill(NaN);
    this.deliverAt = new Float64Array(n).fill(NaN);
    this.refusedAt = new Float64Array(n).fill(NaN);
    this.refusedCode = new Array(n);
    this.errorCodes = {};          // every error frame / HTTP refusal by code
    this.errorsInWindow = {};
    this.duplicates = 0; this.misdelivered = 0; this.foreign = 0; this.sendFailures = 0;
    this.disconnects = 0; this.reconnects = 0;
    this.window = [Infinity, Infinity];
  }
  index(cmid) {
    if (typeof cmid !== "string" || cmid[0] !== "m") return -1;
    const i = Number(cmid.slice(1));
    return Number.isInteger(i) && i >= 0 && i < this.sendAt.length ? i : -1;
  }
  ack(cmid) {
    const i = this.index(cmid);
    if (i < 0) { this.foreign++; return; }
    if (Number.isNaN(this.ackAt[i])) this.ackAt[i] = now();
  }
  error(code, cmid) {
    const t = now();
    code = typeof code === "string" ? code : "unknown";
    this.errorCodes[code] = (this.errorCodes[code] || 0) + 1;
    if (t >= this.window[0] && t < this.window[1]) this.errorsInWindow[code] = (this.errorsInWindow[code] || 0) + 1;
    const i = this.index(cmid);
    if (i >= 0 && Number.isNaN(this.refusedAt[i])) { this.refusedAt[i] = t; this.refusedCode[i] = code; }
  }
  message(cmid, recipient) {
    const t = now();
    const i = this.index(cmid);
    if (i < 0) { this.foreign++; return; }
    if (sched.to[i] !== recipient) { this.misdelivered++; return; }
    if (!Number.isNaN(this.deliverAt[i])) { this.duplicates++; return; }
    this.deliverAt[i] = t;
  }
}

// --- adapters: connect(), send(i, toName, cmid, body), close() -----------------------------
const wsUrl = cfg.url.replace(/^http/, "ws");
const u = new URL(cfg.url);

class ChatlabWs {
  constructor(idx) { this.idx = idx; this.cursor = null; this.live = false; this.closing = false; }
  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${wsUrl}/ws`, { perMessageDeflate: false });
      this.ws = ws;
      let ready = false;
      ws.on("open", () => {
        ws.send(JSON.stringify({ type: "auth", token: cfg.tokens[this.idx] }));
        ws.send(JSON.stringify({ type: "resume", after: this.cursor }));
      });
      ws.on("message", (data) => {
        const ev = JSON.parse(data.toString());
        switch (ev.type) {
          case "message": this.cursor = ev.cursor; tally.message(ev.client_msg_id, this.idx); break;
          case "ack": tally.ack(ev.client_msg_id); break;
          case "error": tally.error(ev.error, ev.client_msg_id); break;
          case "resumed": this.cursor = ev.cursor; this.live = true; ready = true; resolve(); break;
          default: if (ev.cursor) this.cursor = ev.cursor;  // receipts, presence
        }
      });
      ws.on("error", (e) => { if (!ready) reject(e); });
      ws.on("close", (code) => {
        this.live = false;
        if (!ready) { reject(new Error(`closed ${code} before resumed`)); return; }
        if (this.closing) return;
        tally.disconnects++;
        // A real client resumes from its cursor (4008 slow consumer, or a shed connection).
        if (running) setTimeout(() => { if (running) this.connect().then(() => tally.reconnects++, () => {}); }, 100);
      });
    });
  }
  send(i, to, cmid, body) {
    if (!this.live) { tally.sendFailures++; return false; }
    this.ws.send(JSON.stringify({ type: "send", to, body, client_msg_id: cmid }));
    return true;
  }
  close() { this.closing = true; if (this.ws) this.ws.terminate(); }
}

function request(agent, method, path, headers, body, timeoutMs, onSent) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path, agent, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (timeoutMs) req.setTimeout(timeoutMs, () => req.destroy(new Error("timeout")));
    if (onSent) req.on("finish", onSent);
    req.end(body);
  });
}

class ChatlabLongPoll {
  // One keep-alive pool per client, at most 6 connections: a browser's per-host limit.
  constructor(idx) {
    this.idx = idx; this.cursor = null; this.closing = false; this.held = false;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 6 });
    this.auth = `Bearer ${cfg.tokens[idx]}`;
  }
  async connect() {
    // The first poll is answered at once (a fresh account has no events: it returns the cursor).
    const r = await request(this.agent, "GET", "/api/poll", { authorization: this.auth }, undefined, 30000);
    if (r.status !== 200) throw new Error(`GET /api/poll: HTTP ${r.status} ${r.text.slice(0, 120)}`);
    this.cursor = JSON.parse(r.text).cursor;
    this.loop();
  }
  async loop() {
    const timeout = cfg.longpoll_timeout_s ?? 20;
    while (!this.closing) {
      const path = `/api/longpoll?after=${encodeURIComponent(this.cursor)}&timeout=${timeout}`;
      let r;
      try {
        r = await request(this.agent, "GET", path, { authorization: this.auth }, undefined, (timeout + 30) * 1000,
          () => { this.held = true; });
      } catch (e) {
        if (this.closing) return;
        tally.disconnects++;
        await new Promise((res) => setTimeout(res, 100));
        continue;
      } finally { this.held = false; }
      if (r.status !== 200) {
        tally.error(safeCode(r.text), undefined);
        await new Promise((res) => setTimeout(res, 100));
        continue;
      }
      const body = JSON.parse(r.text);
      for (const ev of body.events) if (ev.type === "message") tally.message(ev.client_msg_id, this.idx);
      this.cursor = body.cursor;
    }
  }
  send(i, to, cmid, body) {
    const data = JSON.stringify({ to, body, client_msg_id: cmid });
    request(this.agent, "POST", "/api/messages",
      { authorization: this.auth, "content-type": "application/json", "content-length": Buffer.byteLength(data) },
      data, 60000).then((r) => {
      if (r.status === 200) tally.ack(cmid); else tally.error(safeCode(r.text), cmid);
    }, () => { tally.sendFailures++; });
    return true;
  }
  close() { this.closing = true; this.agent.destroy(); }
}

function safeCode(text) {
  try { return JSON.parse(text).error || "unknown"; } catch { return "unknown"; }
}

class SocketIo {
  constructor(idx, polling) { this.idx = idx; this.polling = polling; this.closing = false; }
  connect() {
    return new Promise((resolve, reject) => {
      const opts = { auth: { user: cfg.users[this.idx] }, reconnection: false, forceNew: true, timeout: 60000,
        transports: [this.polling ? "polling" : "websocket"] };
      // Polling in Node goes through xmlhttprequest-ssl, which opens a connection per request
      // unless given an agent: one keep-alive pool per client, like a browser's.
      if (this.polling) opts.agent = new http.Agent({ keepAlive: true, maxSockets: 6 });
      const s = io(cfg.url, opts);
      this.s = s;
      s.on("connect", () => resolve());
      s.on("connect_error", (e) => reject(e));
      s.on("disconnect", () => { if (!this.closing) tally.disconnects++; });
      s.on("message", (ev) => tally.message(ev.client_msg_id, this.idx));
    });
  }
  send(i, to, cmid, body) {
    if (!this.s.connected) { tally.sendFailures++; return false; }
    this.s.emit("send", { to, body, client_msg_id: cmid }, (a) => {
      if (a && a.type === "error") tally.error(a.error, cmid); else tally.ack(cmid);
    });
    return true;
  }
  close() { this.closing = true; if (this.s) this.s.disconnect(); if (this.s?.io?.opts?.agent) this.s.io.opts.agent.destroy(); }
}

function makeClient(i) {
  switch (cfg.protocol) {
    case "chatlab-ws": return new ChatlabWs(i);
    case "chatlab-longpoll": return new ChatlabLongPoll(i);
    case "sio-ws": return new SocketIo(i, false);
    case "sio-polling": return new SocketIo(i, true);
    default: throw new Error(`protocol=${cfg.protocol}: expected chatlab-ws, chatlab-longpoll, sio-ws or sio-polling`);
  }
}

/** Connect every client, at most `connect_concurrency` at a time; returns [connected, failures]. */
async function connectAll(clients) {
  const limit = cfg.connect_concurrency ?? 100;
  const deadline = now() + (cfg.connect_timeout_s ?? 60) * 1000;
  let next = 0, ok = 0;
  const failures = [];
  connectRetries = 0;
  // A refused or failed connect is retried (at most 5 attempts, 200 ms apart), as a client
  // retries a 503: connecting is set-up, not measured; the retries are reported.
  async function worker() {
    while (next < clients.length && now() < deadline) {
      const c = clients[next++];
      for (let attempt = 1; ; attempt++) {
        try { await c.connect(); ok++; break; } catch (e) {
          if (attempt >= 5 || now() >= deadline) { failures.push(String(e && e.message || e)); break; }
          connectRetries++;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    }
  }
  const t = now();
  await Promise.all(Array.from({ length: Math.min(limit, clients.length) }, worker));
  say(`${ok} of ${clients.length} clients connected in ${((now() - t) / 1000).toFixed(1)} s`);
  return [ok, failures, (now() - t) / 1000];
}

/** How late this process's event loop runs a timer of `periodMs` (every client, the dispatch
 * and the timestamps share the loop, so a late loop lands in every measured latency). */
class LagProbe {
  constructor(periodMs) { this.period = periodMs; this.samples = []; this.timer = null; }
  enable() {
    let due = now() + this.period;
    const tick = () => {
      const t = now();
      this.samples.push(Math.max(0, t - due));
      due = t + this.period;
      this.timer = setTimeout(tick, this.period);
    };
    this.timer = setTimeout(tick, this.period);
  }
  disable() { clearTimeout(this.timer); }
  summary() {
    const s = this.samples.slice().sort((a, b) => a - b);
    return { loop_lag_p50_ms: quantile(s, 0.5), loop_lag_p99_ms: quantile(s, 0.99),
      loop_lag_max_ms: s.length ? s[s.length - 1] : null, loop_lag_samples: s.length };
  }
}

// --- statistics ---------------------------------------------------------------------------------
function quantile(sorted, q) {
  if (!sorted.length) return null;
  const v = sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
  return Number.isFinite(v) ? v : null;
}

// --- main ------------------------------------------------------------------------------------
let running = true;
let connectRetries = 0;
let tally = null;
let sched = null;

async function runLevel() {
  const n = cfg.users.length;
  const total = cfg.warmup_s + cfg.measure_s;
  sched = schedule(n, cfg.rate, total, cfg.seed);
  const m = sched.time.length;
  tally = new Tally(m);
  const clients = Array.from({ length: n }, (_, i) => makeClient(i));
  const [ok, failures, connectS] = await connectAll(clients);
  if (ok < n) {
    running = false;
    clients.forEach((c) => c.close());
    return { error: `${n - ok} of ${n} clients did not connect: ${failures.slice(0, 3).join("; ")}`, connect_s: connectS };
  }
  const body = "x".repeat(cfg.payload_bytes);
  const names = cfg.users;
  const t0 = now() + 500;
  const w0 = t0 + cfg.warmup_s * 1000, w1 = t0 + total * 1000;
  tally.window = [w0, w1];
  const lag = new LagProbe(5);
  let cpuLg0 = null, wallLg0 = 0, srvCpu0 = NaN, srvCpu1 = NaN, cpuLg = null, rss1 = NaN, ticks0 = {}, ticks1 = {};
  let redisCpu0 = NaN, redisCpu1 = NaN;  // the real Redis behind the server, when there is one
  let sampledAt0 = NaN, sampledAt1 = NaN;  // when the /proc samples were taken (a late timer is late)
  let rssPeak = serverRss();
  const rssTimer = setInterval(() => { const r = serverRss(); if (r > rssPeak) rssPeak = r; }, 1000);
  const atW0 = setTimeout(() => {
    sampledAt0 = now(); srvCpu0 = serverCpu(); redisCpu0 = serverCpu(cfg.redis_pid); cpuLg0 = process.cpuUsage(); wallLg0 = now(); ticks0 = cpuTicks(); lag.enable();
  }, w0 - now());
  const atW1 = setTimeout(() => {
    sampledAt1 = now(); srvCpu1 = serverCpu(); redisCpu1 = serverCpu(cfg.redis_pid); ticks1 = cpuTicks(); rss1 = serverRss(); lag.disable(); cpuLg = process.cpuUsage(cpuLg0);
    cpuLg.wall = now() - wallLg0;
  }, w1 - now());

  let next = 0;
  await new Promise((resolve) => {
    function dispatch() {
      const t = now() - t0;
      while (next < m && sched.time[next] <= t) {
        const i = next++;
        const sender = clients[sched.from[i]];
        tally.sendAt[i] = now();
        if (!sender.send(i, names[sched.to[i]], `m${i}`, body)) tally.sendAt[i] = NaN;
      }
      if (next < m) setTimeout(dispatch, Math.max(0, sched.time[next] - (now() - t0)));
      else resolve();
    }
    setTimeout(dispatch, Math.max(0, t0 - now()));
  });
  // Wait for the window's end (the last send may come before it), then drain.
  while (now() < w1 + 1) await new Promise((r) => setTimeout(r, Math.max(1, w1 + 1 - now())));
  const drainEnd = now() + cfg.drain_s * 1000;
  const pending = () => {
    for (let i = 0; i < m; i++) {
      if (Number.isNaN(tally.sendAt[i]) || !Number.isNaN(tally.refusedAt[i])) continue;
      if (Number.isNaN(tally.ackAt[i]) || Number.isNaN(tally.deliverAt[i])) return true;
    }
    return false;
  };
  while (now() < drainEnd && pending()) await new Promise((r) => setTimeout(r, 50));
  const drainS = (now() - w1) / 1000;
  clearTimeout(atW0); clearTimeout(atW1); clearInterval(rssTimer);
  running = false;
  const closedAt = now();
  clients.forEach((c) => c.close());

  // Per message sent (scheduled) in the measured window.
  const lat = [], late = [];
  let inWin = 0, acked = 0, delivered = 0, lost = 0, unanswered = 0, notSent = 0;
  const refused = {};
  let ackW = 0, delW = 0;
  for (let i = 0; i < m; i++) {
    const a = tally.ackAt[i], d = tally.deliverAt[i];
    if (a >= w0 && a < w1) ackW++;
    if (d >= w0 && d < w1) delW++;
    const sched_t = t0 + sched.time[i];
    if (sched_t < w0 || sched_t >= w1) continue;
    inWin++;
    if (Number.isNaN(tally.sendAt[i])) { notSent++; continue; }
    late.push(tally.sendAt[i] - sched_t);
    if (!Number.isNaN(tally.refusedAt[i])) {
      refused[tally.refusedCode[i]] = (refused[tally.refusedCode[i]] || 0) + 1;
      continue;
    }
    const isAcked = !Number.isNaN(a), isDel = !Number.isNaN(d);
    if (isAcked) acked++; else unanswered++;
    if (isDel) { delivered++; lat.push(d - tally.sendAt[i]); } else { lat.push(Infinity); if (isAcked) lost++; }
  }
  // Lost over the whole level too (warm-up sends included): acked, never delivered.
  let lostAll = 0;
  for (let i = 0; i < m; i++) {
    if (!Number.isNaN(tally.ackAt[i]) && Number.isNaN(tally.deliverAt[i]) && Number.isNaN(tally.refusedAt[i])) lostAll++;
  }
  lat.sort((x, y) => x - y);
  late.sort((x, y) => x - y);
  const fin = lat.filter(Number.isFinite);
  const W = cfg.measure_s;
  return {
    protocol: cfg.protocol, clients: n, rate: cfg.rate, seed: cfg.seed, payload_bytes: cfg.payload_bytes,
    warmup_s: cfg.warmup_s, measure_s: W, drain_s_used: drainS, connect_s: connectS,
    offered_per_s: inWin / W, acked_per_s: ackW / W, delivered_per_s: delW / W,
    connect_retries: connectRetries, sent_in_window: inWin, not_sent: notSent,
    acked: acked, delivered: delivered, refused: refused, unanswered: unanswered,
    lost: lost, lost_whole_level: lostAll,
    refused_per_s: Object.fromEntries(Object.entries(tally.errorsInWindow).map(([k, v]) => [k, v / W])),
    error_frames: tally.errorCodes,
    latency_ms: { p50: quantile(lat, 0.5), p90: quantile(lat, 0.9), p99: quantile(lat, 0.99),
      max: fin.length ? fin[fin.length - 1] : null, n: lat.length, undelivered: lat.length - fin.length },
    duplicates: tally.duplicates, misdelivered: tally.misdelivered, foreign: tally.foreign,
    send_failures: tally.sendFailures, disconnects: tally.disconnects, reconnects: tally.reconnects,
    server_cpu_s: srvCpu1 - srvCpu0,
    server_cpu_utilization: (srvCpu1 - srvCpu0) * 1000 / (sampledAt1 - sampledAt0),
    server_cpu_ms_per_delivered: delW ? (srvCpu1 - srvCpu0) * 1000 / delW : null,
    server_rss_bytes: rss1, server_rss_peak_bytes: rssPeak,
    redis_cpu_utilization: cfg.redis_pid ? (redisCpu1 - redisCpu0) * 1000 / (sampledAt1 - sampledAt0) : null,
    // Busy fraction of each pinned CPU over the window, and the part of it that was not ours.
    cpu_busy: { server_cpu: cpuBusy(ticks0, ticks1, cfg.server_cpu ?? "0"), loadgen_cpu: cpuBusy(ticks0, ticks1, cfg.loadgen_cpu ?? "1") },
    loadgen: {
      ...lag.summary(),
      cpu_utilization: cpuLg ? (cpuLg.user + cpuLg.system) / 1000 / cpuLg.wall : null,
      send_late_p50_ms: quantile(late, 0.5), send_late_p99_ms: quantile(late, 0.99),
      close_ms: now() - closedAt,
    },
  };
}

async function idle() {
  const n = cfg.users.length;
  tally = new Tally(0);
  sched = { to: new Int32Array(0) };
  const clients = Array.from({ length: n }, (_, i) => makeClient(i));
  const [ok, failures, connectS] = await connectAll(clients);
  let held = null;
  if (cfg.protocol === "chatlab-longpoll") {
    // Wait (bounded) until every poll has been written out: then the server holds it.
    const until = now() + 30000;
    while (now() < until && clients.some((c) => c.cursor !== null && !c.held)) await new Promise((r) => setTimeout(r, 50));
    held = clients.filter((c) => c.held).length;
  }
  process.stdout.write(JSON.stringify({ event: "ready", connected: ok, failed: n - ok, failures: failures.slice(0, 3),
    connect_s: connectS, connect_retries: connectRetries, held, disconnects: tally.disconnects }) + "\n");
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => { rl.on("line", (l) => { if (l.trim() === "stop") resolve(); }); rl.on("close", resolve); });
  rl.close();
  running = false;
  const disconnects = tally.disconnects;
  clients.forEach((c) => c.close());
  process.stdout.write(JSON.stringify({ event: "closed", disconnects_while_idle: disconnects }) + "\n");
}

const main = cfg.mode === "idle" ? idle : async () => process.stdout.write(JSON.stringify(await runLevel()) + "\n");
main().then(() => process.exit(0), (e) => {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + "\n");
  process.exit(1);
});
