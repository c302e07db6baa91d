#!/usr/bin/env bash
# Install and start what the test suite needs beyond Python packages:
#   - a Redis on 127.0.0.1:6379 (Debian's redis-server), started only when none answers;
#   - a PostgreSQL on 127.0.0.1:5432 (Debian's postgresql) that lets the role postgres in
#     without a password from 127.0.0.1, started only when none answers: a private cluster
#     under /tmp/chatlab-pg (trust authentication on loopback only), so nothing of the
#     machine's own configuration changes;
#   - Debian's Chromium for the browser tests (Playwright drives it by executable path,
#     it never downloads a browser of its own);
#   - Debian's HAProxy for `chatlab cluster` and the cluster tests, and the redis-server
#     and PostgreSQL programs (installed only: each cluster runs private ones of its own
#     from a generated configuration; the packages' own services are not changed).
# Idempotent: a machine that has both already is left alone.
set -euo pipefail

redis_url=${CHATLAB_REDIS_URL:-redis://127.0.0.1:6379/0}
host_port=${redis_url#redis://}; host_port=${host_port%%/*}
host=${host_port%%:*}; port=${host_port##*:}

answers() { python3 - "$host" "$port" <<'PY'
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
    s.sendall(b"PING\r\n"); ok = s.recv(16).startswith(b"+PONG"); s.close()
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then echo "ensure-services: need root to apt-get install $*" >&2; return 1; fi
  if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if answers; then
  echo "ensure-services: Redis answers on $host:$port"
else
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /tmp/chatlab-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir /tmp/chatlab-redis --logfile /tmp/chatlab-redis/redis.log
  for _ in $(seq 50); do answers && break; sleep 0.1; done
  answers && echo "ensure-services: started Redis on $host:$port" || { echo "ensure-services: Redis did not start" >&2; exit 1; }
fi

pg_answers() { python3 - <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", 5432), timeout=1).close(); ok = True
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if pg_answers; then
  echo "ensure-services: PostgreSQL answers on 127.0.0.1:5432"
else
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bindir" ]; then
    apt_install postgresql
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  pgdata=/tmp/chatlab-pg
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    mkdir -p "$pgdata" && chown postgres:postgres "$pgdata"
    runuser -u postgres -- "$bindir/initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
  fi
  runuser -u postgres -- "$bindir/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w \
    -o "-p 5432 -k $pgdata -c listen_addresses=127.0.0.1" start >/dev/null
  pg_answers && echo "ensure-services: started PostgreSQL on 127.0.0.1:5432 ($pgdata)" \
    || { echo "ensure-services: PostgreSQL did not start (see $pgdata/server.log)" >&2; exit 1; }
fi

chromium=${CHATLAB_CHROMIUM:-/usr/bin/chromium}
if [ -x "$chromium" ]; then
  echo "ensure-services: Chromium at $chromium"
else
  apt_install chromium
  echo "ensure-services: installed Chromium"
fi

# `chatlab cluster` starts private Redis and PostgreSQL servers of its own: their programs
# must be installed even where a Redis or PostgreSQL already answers.
command -v redis-server >/dev/null || apt_install redis-server
ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || apt_install postgresql

haproxy=${CHATLAB_HAPROXY:-haproxy}
if command -v "$haproxy" >/dev/null; then
  echo "ensure-services: HAProxy at $(command -v "$haproxy")"
else
  apt_install haproxy
  echo "ensure-services: installed HAProxy"
fi
