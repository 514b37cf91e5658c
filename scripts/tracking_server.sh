#!/usr/bin/env bash
# A team MLflow tracking server for labnet: runs in PostgreSQL, artifacts (and pyfunc models) proxied
# through the server. For trying it on one machine; see docs/scaling.md for a shared one.
#
#   scripts/tracking_server.sh start [--dir DIR] [--port 5000] [--host 127.0.0.1] [--db-uri URI]
#                                    [--pg-port N] [--artifacts DEST] [--workers 2] [-- MLFLOW_SERVER_ARGS...]
#   scripts/tracking_server.sh stop  [--dir DIR] [--purge]     # --purge: also delete the database and artifacts
#   scripts/tracking_server.sh status [--dir DIR]
#
# Without --db-uri, `start` creates a PostgreSQL cluster of its own (initdb, listening on 127.0.0.1 only,
# run by a non-root user: `postgres`, or a system user it creates, when started as root) and the
# database `mlflow` in it, then starts `mlflow server` and waits until it answers /health.
# Needs: PostgreSQL's server binaries (Debian: apt-get install postgresql) and pip install 'labnet[server]'.
# Environment: PYTHON (default python3: the interpreter whose mlflow runs the server),
# LABNET_PG_OS_USER (default postgres), LABNET_SERVER_TIMEOUT (seconds to wait for /health, default 180).
set -euo pipefail

die() { echo "tracking_server: error: $*" >&2; exit 1; }
say() { echo "tracking_server: $*"; }

command_name=${1:-}
[[ -n $command_name ]] && shift || true
DIR=.labnet-server PORT=5000 HOST=127.0.0.1 DB_URI="" PG_PORT="" ARTIFACTS="" WORKERS=2 PURGE=0
EXTRA=()
while (($#)); do
    case $1 in
        --dir) DIR=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --host) HOST=$2; shift 2 ;;
        --db-uri) DB_URI=$2; shift 2 ;;
        --pg-port) PG_PORT=$2; shift 2 ;;
        --artifacts) ARTIFACTS=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --purge) PURGE=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown option $1 (see the top of $0)" ;;
    esac
done
PY=${PYTHON:-python3}
TIMEOUT=${LABNET_SERVER_TIMEOUT:-180}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

find_pg_bin() {
    local initdb
    initdb=$(command -v initdb 2>/dev/null || true)
    if [[ -z $initdb ]]; then
        initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    [[ -n $initdb ]] || die "PostgreSQL's initdb not found: install the server (Debian/Ubuntu: apt-get install postgresql) or pass --db-uri"
    dirname "$(readlink -f "$initdb")"
}

# run a PostgreSQL command as the cluster's owner (PostgreSQL refuses to run as root)
as_pg() {
    if ((EUID == 0)); then runuser -u "$(cat "$DIR/pg.user")" -- "$@"; else "$@"; fi
}

pg_running() { [[ -f $DIR/pg.path ]] && as_pg "$PG_BIN/pg_ctl" -D "$(cat "$DIR/pg.path")" status >/dev/null 2>&1; }

start_postgres() {
    PG_BIN=$(find_pg_bin)
    if pg_running; then
        PG_PORT=$(cat "$DIR/pg.port")
        say "PostgreSQL already running on 127.0.0.1:$PG_PORT"
        return
    fi
    local user data
    if ((EUID == 0)); then
        user=${LABNET_PG_OS_USER:-postgres}
        if ! id "$user" >/dev/null 2>&1; then
            useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$user"
        fi
    else
        user=$(id -un)
    fi
    echo "$user" >"$DIR/pg.user"
    if [[ -f $DIR/pg.path && -f $(cat "$DIR/pg.path")/PG_VERSION ]]; then
        data=$(cat "$DIR/pg.path")
    else
        data=$DIR/postgres
        mkdir -p "$data"
        if ((EUID == 0)); then
            chown "$user" "$data"
            if ! runuser -u "$user" -- test -w "$data"; then  # a parent folder it cannot enter (e.g. mode 700)
                rmdir "$data"
                data=$(mktemp -d "${TMPDIR:-/tmp}/labnet-pg.XXXXXX")
                chown "$user" "$data"
            fi
        fi
        chmod 700 "$data"
        echo "$data" >"$DIR/pg.path"
        as_pg "$PG_BIN/initdb" -D "$data" -U mlflow --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1 ||
            die "initdb failed: $(tail -n 5 "$DIR/initdb.log")"
    fi
    PG_PORT=${PG_PORT:-$(free_port)}
    echo "$PG_PORT" >"$DIR/pg.port"
    # loopback only, socket in the data folder (no /var/run/postgresql needed)
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$data" start >/dev/null ||
        die "PostgreSQL did not start: $(tail -n 5 "$data/server.log" 2>/dev/null)"
    if ! "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U mlflow -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | grep -q 1; then
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U mlflow mlflow
    fi
    say "PostgreSQL on 127.0.0.1:$PG_PORT (data in $data)"
}

server_pid() { [[ -f $DIR/mlflow.pid ]] && kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null && cat "$DIR/mlflow.pid"; }

healthy() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=3).read()' "$1" 2>/dev/null; }

start() {
    "$PY" -c 'import mlflow' 2>/dev/null || die "$PY has no mlflow: pip install 'labnet[server]' (or set PYTHON)"
    if pid=$(server_pid); then
        say "already running (pid $pid): $(cat "$DIR/server.url")"
        return
    fi
    local started=$SECONDS
    if [[ -z $DB_URI ]]; then
        start_postgres
        DB_URI="postgresql+psycopg2://mlflow@127.0.0.1:$PG_PORT/mlflow"
    fi
    case $DB_URI in
        postgresql+psycopg2:*) "$PY" -c 'import psycopg2' 2>/dev/null ||
            die "$DB_URI needs psycopg2: pip install 'labnet[server]' (psycopg2-binary)" ;;
        postgresql:* | postgresql+psycopg:*) "$PY" -c 'import psycopg' 2>/dev/null ||
            die "$DB_URI needs psycopg 3 with SQLAlchemy 2.1: pip install 'psycopg[binary]', or use postgresql+psycopg2://" ;;
    esac
    ARTIFACTS=${ARTIFACTS:-$DIR/artifacts}
    [[ $ARTIFACTS == *://* ]] || { mkdir -p "$ARTIFACTS" && ARTIFACTS=$(cd "$ARTIFACTS" && pwd); }
    local url="http://$HOST:$PORT"
    healthy "$url" && die "something already answers on $url: choose another --port"
    # several uvicorn workers: give each time to answer the supervisor's health check on a busy machine
    # (its default, 5 s, has it kill and restart workers that are still importing MLflow)
    if ((WORKERS > 1)) && [[ " ${EXTRA[*]-} " != *" --uvicorn-opts "* ]]; then
        EXTRA+=(--uvicorn-opts "--timeout-worker-healthcheck 60")
    fi
    # MLflow 3's server-side job runner (GenAI evaluation jobs; several processes) is of no use to labnet
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
    # its own session, so that `stop` ends the server and all its workers, and nothing else
    setsid "$PY" -m mlflow server --backend-store-uri "$DB_URI" --artifacts-destination "$ARTIFACTS" \
        --host "$HOST" --port "$PORT" --workers "$WORKERS" ${EXTRA[@]+"${EXTRA[@]}"} >"$DIR/mlflow.log" 2>&1 </dev/null &
    echo $! >"$DIR/mlflow.pid"
    echo "$url" >"$DIR/server.url"
    echo "$DB_URI" >"$DIR/db.uri"
    # MLflow answers /health only once its workers are up (10-20 s here): wait for it, not for a fixed time
    local deadline=$((SECONDS + TIMEOUT))
    until healthy "$url"; do
        kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null || die "mlflow server exited: $(tail -n 20 "$DIR/mlflow.log")"
        ((SECONDS < deadline)) || die "no answer from $url/health after ${TIMEOUT}s: see $DIR/mlflow.log"
        sleep 0.5
    done
    say "MLflow tracking server at $url (up in $((SECONDS - started)) s)"
    say "  runs:      $DB_URI"
    say "  artifacts: $ARTIFACTS (proxied by the server)"
    say "  use it:    python -m labnet tracking.uri=$url    or    export MLFLOW_TRACKING_URI=$url"
    say "  stop it:   $0 stop --dir $DIR"
}

stop() {
    if pid=$(server_pid); then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        say "MLflow server stopped"
    fi
    rm -f "$DIR/mlflow.pid"
    if [[ -f $DIR/pg.path ]]; then
        PG_BIN=$(find_pg_bin)
        if pg_running; then
            as_pg "$PG_BIN/pg_ctl" -D "$(cat "$DIR/pg.path")" -m fast -w stop >/dev/null
            say "PostgreSQL stopped"
        fi
    fi
    if ((PURGE)); then
        [[ -f $DIR/pg.path ]] && rm -rf "$(cat "$DIR/pg.path")"
        rm -rf "$DIR"
        say "deleted $DIR"
    fi
}

status() {
    if pid=$(server_pid) && healthy "$(cat "$DIR/server.url")"; then
        say "running (pid $pid): $(cat "$DIR/server.url"), runs in $(cat "$DIR/db.uri")"
    else
        say "not running"
        return 1
    fi
}

case $command_name in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status [--dir DIR] [--port PORT] ... (see the top of $0)" ;;
esac
