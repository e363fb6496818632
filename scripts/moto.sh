#!/usr/bin/env bash
# The AWS emulator for the AWS-mode tests: moto's server (SQS + DynamoDB) on
# a free loopback port, from PyPI, in the project virtualenv `.venv`.
#
#   scripts/moto.sh start   install moto[server] if missing, start the server,
#                           wait until it answers; prints the env (as `env`)
#   scripts/moto.sh stop    stop the server started by `start`
#   scripts/moto.sh env     print `export AWS_ENDPOINT_URL=... AWS_ACCESS_KEY_ID=testing
#                           AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
#                           AWS_TEST_ENDPOINT_URL=...` for the running server,
#                           e.g. `eval "$(scripts/moto.sh env)"` (scripts/test does)
#   scripts/moto.sh endpoint  print just its URL
#   scripts/moto.sh status  say whether it runs, and where
#
# The tests read the endpoint from AWS_TEST_ENDPOINT_URL: not an SQSAGA_*
# name, since the sqsaga binary rejects unknown SQSAGA_* variables at start,
# so the binary runs as is in a shell that evaluated `env`.
#
# The port and PID are kept in .venv/moto.port and .venv/moto.pid; the log in
# .venv/moto.log. `start` when a server already answers reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the version the AWS tests were run against (a newer moto changes
# emulated behaviour now and then; bump deliberately).
MOTO_VERSION="5.2.5"
VENV=".venv"
PY="$VENV/bin/python"
PORT_FILE="$VENV/moto.port"
PID_FILE="$VENV/moto.pid"
LOG_FILE="$VENV/moto.log"

die() {
  echo "moto.sh: $*" >&2
  exit 1
}

ensure_venv() {
  if [ ! -x "$PY" ]; then
    echo "moto.sh: creating the virtualenv $VENV" >&2
    python3 -m venv "$VENV" || die "cannot create $VENV (is python3-venv installed?)"
  fi
}

ensure_moto() {
  ensure_venv
  local have
  have="$("$PY" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true)"
  # moto_server also needs the [server] extras (flask, flask-cors): check one.
  if [ "$have" = "$MOTO_VERSION" ] && "$PY" -c 'import flask_cors, docker' >/dev/null 2>&1; then
    return 0
  fi
  echo "moto.sh: installing moto[server]==$MOTO_VERSION into $VENV (found: ${have:-none})" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2 ||
    die "pip could not install moto[server]==$MOTO_VERSION"
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# Whether the server on $1 answers an HTTP request (any status will do).
answers() {
  "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=2)
except urllib.error.HTTPError:
    pass
EOF
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

print_env() {
  local port="$1"
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_TEST_ENDPOINT_URL=http://127.0.0.1:$port"
}

start() {
  ensure_moto
  if pid="$(running_pid)" && [ -f "$PORT_FILE" ] && answers "$(cat "$PORT_FILE")"; then
    echo "moto.sh: already running (pid $pid, port $(cat "$PORT_FILE"))" >&2
    print_env "$(cat "$PORT_FILE")"
    return 0
  fi
  local port
  port="$(free_port)"
  # setsid: its own process group, so `stop` ends it and its children only.
  setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$LOG_FILE" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PID_FILE"
  echo "$port" >"$PORT_FILE"
  for _ in $(seq 1 100); do
    if answers "$port"; then
      echo "moto.sh: moto $MOTO_VERSION listening on 127.0.0.1:$port (pid $pid, log $LOG_FILE)" >&2
      print_env "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || {
      cat "$LOG_FILE" >&2
      die "moto_server exited at start (log above)"
    }
    sleep 0.2
  done
  stop
  die "moto_server did not answer on 127.0.0.1:$port within 20 s (log: $LOG_FILE)"
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 -- "-$pid" 2>/dev/null || true
    echo "moto.sh: stopped moto (pid $pid)" >&2
  fi
  rm -f "$PID_FILE" "$PORT_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env)
    running_pid >/dev/null && [ -f "$PORT_FILE" ] || die "moto is not running: run scripts/moto.sh start"
    print_env "$(cat "$PORT_FILE")"
    ;;
  endpoint)
    running_pid >/dev/null && [ -f "$PORT_FILE" ] || die "moto is not running: run scripts/moto.sh start"
    echo "http://127.0.0.1:$(cat "$PORT_FILE")"
    ;;
  status)
    if pid="$(running_pid)" && [ -f "$PORT_FILE" ]; then
      echo "running: pid $pid, http://127.0.0.1:$(cat "$PORT_FILE")"
    else
      echo "not running"
      exit 1
    fi
    ;;
  *)
    echo "usage: scripts/moto.sh start|stop|env|endpoint|status" >&2
    exit 2
    ;;
esac
