#!/usr/bin/env bash
# Starts a throw-away PostgreSQL server (Debian's postgresql-15) for tests:
#   scripts/start-postgres.sh DIR [PORT]   prints the server's URL
#   scripts/start-postgres.sh --stop DIR   stops it
# A DIR that holds a stopped server starts it again, with its data and password
# (tests of a database restart).
# Password authentication over 127.0.0.1 only. As root, the server runs as the
# postgres user (initdb refuses root); PID 1 need not be systemd.
set -euo pipefail
if [ "${1:-}" = "--stop" ]; then
  dir=$2
  bin=$(cat "$dir/bin")
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  else "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; fi
  exit 0
fi
dir=$1 port=${2:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "start-postgres: PostgreSQL is not installed (apt-get install postgresql-15)" >&2
  exit 1
fi
run=()
if [ "$(id -u)" = 0 ]; then run=(runuser -u postgres --); fi
if [ -f "$dir/data/PG_VERSION" ]; then
  pw=$(cat "$dir/pw")
else
  mkdir -p "$dir"
  echo "$bin" > "$dir/bin"
  pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '%s\n' "$pw" > "$dir/pw"   # a real file: initdb --pwfile=<(...) fails under runuser
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$dir"
    chmod 700 "$dir"
  fi
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A scram-sha-256 --pwfile="$dir/pw" >"$dir/initdb.log" 2>&1
fi
"${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
echo "postgresql://postgres:$pw@127.0.0.1:$port/postgres"
