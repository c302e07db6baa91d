// The Socket.IO 4.8 comparison server of `make bench-server`: a 1:1 chat relay, in memory,
// nothing persisted, default in-memory adapter.
//
//   node sio_server.mjs [--port 0] [--host 127.0.0.1]
//
// prints "socket.io server on http://HOST:PORT" once it listens, answers GET /healthz, and
// stops on SIGTERM or SIGINT.
//
// Each client connects with `auth: {user: NAME}` (no password: Socket.IO has no accounts of its
// own, and a token lookup would be one Map.get) and joins the room named after its user, so
// that several devices of one user all receive. A "send" event `{to, body, client_msg_id}`
// becomes `socket.to(to).emit("message", EVENT)` with EVENT shaped like the reference
// server's message event (docs/PROTOCOL.md), and the acknowledgement callback gets the
// reference server's ack body. A refused send answers the callback with an error object
// in the reference server's shape instead.
import http from "node:http";
import { Server } from "socket.io";

const args = process.argv.slice(2);
function opt(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}
const host = opt("--host", "127.0.0.1");
const port = Number(opt("--port", "0"));

const httpServer = http.createServer((req, res) => {
  // Socket.IO answers its own path (/socket.io/) before this handler sees it.
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404, { "content-type": "application/json" });
  res.end('{"error":"not_found"}');
});
// Defaults otherwise (in-memory adapter, no per-message deflate, polling compression above 1 KiB).
const io = new Server(httpServer, { serveClient: false, cors: { origin: false } });
const epoch = Math.floor(Date.now() / 1000).toString(16).slice(-8);
const USER = /^[a-z0-9_]{1,32}$/;
const seqOfUser = new Map(); // recipient -> last event sequence (the cursor's seq)
const idOfConv = new Map(); // conversation -> last message id

io.use((socket, next) => {
  const user = socket.handshake.auth && socket.handshake.auth.user;
  if (typeof user !== "string" || !USER.test(user)) return next(new Error("unauthorized"));
  socket.data.user = user;
  next();
});

io.on("connection", (socket) => {
  const user = socket.data.user;
  socket.join(user);
  socket.on("send", (msg, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    if (!msg || typeof msg.to !== "string" || !USER.test(msg.to) || msg.to === user ||
        typeof msg.body !== "string" || msg.body.length < 1 || msg.body.length > 4000 ||
        typeof msg.client_msg_id !== "string") {
      reply({ type: "error", error: "bad_request", message: "expected {to, body, client_msg_id}" });
      return;
    }
    const conversation = user < msg.to ? `dm:${user}:${msg.to}` : `dm:${msg.to}:${user}`;
    const id = (idOfConv.get(conversation) || 0) + 1;
    idOfConv.set(conversation, id);
    const seq = (seqOfUser.get(msg.to) || 0) + 1;
    seqOfUser.set(msg.to, seq);
    const sentAt = Date.now();
    socket.to(msg.to).emit("message", {
      type: "message", cursor: `${epoch}.${seq}`, id, conversation, sender: user, body: msg.body,
      client_msg_id: msg.client_msg_id, sent_at: sentAt,
    });
    reply({ id, conversation, sent_at: sentAt, client_msg_id: msg.client_msg_id });
  });
});

function stop() {
  io.close();
  httpServer.close();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

httpServer.listen(port, host, () => {
  const a = httpServer.address();
  console.log(`socket.io server on http://${host}:${a.port}`);
});
