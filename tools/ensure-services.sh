#!/usr/bin/env bash
# Install and start what the test suite needs beyond Python packages:
#   - a Redis on 127.0.0.1:6379 (Debian's redis-server), started only when none answers;
#   - Debian's Chromium for the browser tests (Playwright drives it by executable path,
#     it never downloads a browser of its own).
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

chromium=${CHATLAB_CHROMIUM:-/usr/bin/chromium}
if [ -x "$chromium" ]; then
  echo "ensure-services: Chromium at $chromium"
else
  apt_install chromium
  echo "ensure-services: installed Chromium"
fi
