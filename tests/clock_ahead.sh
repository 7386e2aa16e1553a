#!/usr/bin/env bash
# Run the test suite with every clock it sees moved ahead (default a month: FOBO_CLOCK_OFFSET=+30d),
# to prove that no test depends on today's date. Needs root and Debian's faketime, PostgreSQL and
# MariaDB packages. The tests, the workers they start, and a PostgreSQL and a MariaDB of their
# own (under /tmp, on ports 15433 and 13307) all run under libfaketime, so the application and
# its databases agree on the (fake) time, as they would on any real day. Redis and RabbitMQ keep
# no dates that matter and are shared. Arguments go to pytest:
#   bash tests/clock_ahead.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."
offset=${FOBO_CLOCK_OFFSET:-+30d}
lib=$(dpkg -L libfaketime | grep 'libfaketimeMT.so.1$' | head -1)
[ -n "$lib" ] || { echo "install Debian's faketime package first" >&2; exit 2; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/fobo-clock-ahead.XXXXXX)
chmod 755 "$dir"
# Only the calendar moves: the monotonic clock has no date, and faking it makes libfaketime's
# pthread_cond_timedwait wrapper hang Python's timed waits (threading.Event.wait never returns,
# so lease keepers and pollers stall as no real machine would). With it unfaked, libfaketime
# still shifts clock_nanosleep's absolute monotonic deadline, so Python's time.sleep fails with
# EINVAL: the Python processes sleep through select() instead (sitecustomize below).
# Chromium (the browser tests' user) keeps the real clock: under libfaketime its timers spin
# (load average 80 on two cores); what the tests check is rendered by the broker.
faked=(env LD_PRELOAD="$lib" FAKETIME="$offset" FAKETIME_DONT_RESET=1 FAKETIME_DONT_FAKE_MONOTONIC=1
       FAKETIME_SKIP_CMDS=chromium,chrome_crashpad_handler)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

install -d -o postgres "$dir/pg" "$dir/pgsocket"
runuser -u postgres -- "$pgbin/initdb" -D "$dir/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "${faked[@]}" "$pgbin/postgres" -D "$dir/pg" -p 15433 -k "$dir/pgsocket" \
  -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 >"$dir/pg.log" 2>&1 &
pids+=($!)

install -d -o mysql "$dir/mysql" "$dir/mysqlrun"
mariadb-install-db --datadir="$dir/mysql" --user=mysql --auth-root-authentication-method=normal \
  >/dev/null 2>&1
"${faked[@]}" /usr/sbin/mariadbd --datadir="$dir/mysql" --user=mysql --port=13307 \
  --socket="$dir/mysqlrun/mysql.sock" --bind-address=127.0.0.1 --skip-name-resolve \
  --pid-file="$dir/mysqlrun/mysql.pid" \
  --character-set-server=utf8mb4 >"$dir/mysql.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 60); do  # both up, or say why not
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$dir/pg.log"; exit 2; }
  kill -0 "${pids[1]}" 2>/dev/null || { tail -20 "$dir/mysql.log"; exit 2; }
  "$pgbin/pg_isready" -h 127.0.0.1 -p 15433 -q && mariadb -h 127.0.0.1 -P 13307 -u root -e 'select 1' \
    >/dev/null 2>&1 && break
  sleep 1
done
"$pgbin/createdb" -h 127.0.0.1 -p 15433 -U postgres test
mariadb -h 127.0.0.1 -P 13307 -u root -e "CREATE DATABASE IF NOT EXISTS test; \
  CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
echo "database clocks: $(psql -h 127.0.0.1 -p 15433 -U postgres -tAc 'select now()') (PostgreSQL)," \
  "$(mariadb -h 127.0.0.1 -P 13307 -u root -N -e 'select now()') (MariaDB); real: $(date -u)"

mkdir -p "$dir/site"
cat >"$dir/site/sitecustomize.py" <<'PY'
import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


time.sleep = _sleep
PY
export PYTHONPATH="$dir/site${PYTHONPATH:+:$PYTHONPATH}"
export FOBO_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:15433/test"
export FOBO_TEST_MARIADB_URL="mysql+pymysql://root@127.0.0.1:13307/test"
"${faked[@]}" python3 -c 'import datetime; print("python clock:", datetime.datetime.now(datetime.UTC))'
"${faked[@]}" python3 -m pytest "$@"
