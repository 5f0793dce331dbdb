#!/usr/bin/env bash
# tagwatch (SQLite and PostgreSQL stores) and PostgreSQL+PostGIS side by side, on one seeded
# dataset, in one run, on this machine. See docs/BENCHMARKS.md "Side by side with PostGIS".
#
#   benches/compare.sh                    # 2,000 devices, 10 M fixes (one a minute, ~3.5 days)
#   benches/compare.sh --quick            # 200 k fixes: try the script
#   benches/compare.sh --fixes 100000000  # the large run (~13 GB of pings, hours)
#
# Options: --fixes N, --devices N, --seed N, --queries N (per query kind), --quick,
#          --systems tagwatch-sqlite,tagwatch-postgres,postgis (a subset reuses the others'
#          results already in the work dir), --work DIR (default target/compare/run).
# Environment: COMPARE_PG (default postgres://postgres@127.0.0.1:5432), the PostgreSQL server
# holding both tagwatch's PostgreSQL store and the PostGIS database; databases
# tw_compare_tagwatch and tw_compare_postgis on it are dropped and recreated.
#
# Needs: a Rust toolchain, PostgreSQL 15 running with trust auth for the postgres user on
# COMPARE_PG; installs Debian's postgresql-15-postgis-3 when missing (root or sudo).
# Prints the table at the end and writes it to target/compare/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

fixes=10000000
devices=2000
seed=1
queries=200
systems=tagwatch-sqlite,tagwatch-postgres,postgis
work=target/compare/run
command="benches/compare.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --fixes) fixes=$2; shift 2 ;;
        --devices) devices=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --queries) queries=$2; shift 2 ;;
        --systems) systems=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --quick) fixes=200000; queries=50; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
pg=${COMPARE_PG:-postgres://postgres@127.0.0.1:5432}
data=$work/data
mkdir -p "$work"
work=$(realpath "$work") # absolute: the store URLs below are built from it
log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }
die() { echo "compare.sh: $*" >&2; exit 1; }
has() { [[ ",$systems," == *",$1,"* ]]; }

# --- PostgreSQL and PostGIS ------------------------------------------------------------
psql -X -q -v ON_ERROR_STOP=1 "$pg/postgres" -Atc 'SELECT 1' >/dev/null 2>&1 ||
    die "PostgreSQL is not reachable at $pg/postgres (start it: pg_ctlcluster 15 main start; trust auth for postgres)"
server_major=$(psql -X "$pg/postgres" -Atc "SELECT current_setting('server_version_num')::int / 10000")
[ "$server_major" = 15 ] || die "PostgreSQL $server_major at $pg; this script installs PostGIS for 15"
if ! dpkg -s postgresql-15-postgis-3 >/dev/null 2>&1; then
    log "installing postgresql-15-postgis-3"
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-15-postgis-3 >/dev/null
fi
psql -X "$pg/postgres" -Atc "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'" | grep -q 1 ||
    die "the postgis extension is not available on the server at $pg"

# --- build -------------------------------------------------------------------------------
log "building (cargo build --release)"
cargo build --release --bin tagwatch --example compare
tw=target/release/tagwatch
cmp=target/release/examples/compare

# --- dataset -----------------------------------------------------------------------------
stamp="fixes=$fixes devices=$devices seed=$seed queries=$queries"
if [ "$(cat "$data/stamp" 2>/dev/null)" != "$stamp" ]; then
    log "generating the dataset ($stamp)"
    rm -rf "$data"
    $cmp gen --out "$data" --fixes "$fixes" --devices "$devices" --seed "$seed" --queries "$queries"
    echo "$stamp" > "$data/stamp"
else
    log "reusing the dataset in $data ($stamp)"
fi

# --- load average, sampled through the run -----------------------------------------------
: > "$work/load.log"
( while true; do cat /proc/loadavg >> "$work/load.log"; sleep 15; done ) &
loadmon=$!
server=
cleanup() {
    kill "$loadmon" 2>/dev/null || true
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
}
trap cleanup EXIT

# --- tagwatch ----------------------------------------------------------------------------
# run_tagwatch NAME DATABASE_URL PORT
run_tagwatch() {
    local name=$1 url=$2 port=$3
    if curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; then
        die "port $port is in use"
    fi
    export DATABASE_URL=$url
    local token
    token=$($tw user create --name compare-admin --role admin)
    RUST_LOG=warn $tw serve --listen "127.0.0.1:$port" > "$work/$name.log" 2>&1 &
    server=$!
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break
        kill -0 "$server" 2>/dev/null || die "$name: the server exited; see $work/$name.log"
        sleep 0.2
    done
    curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" || die "$name: not ready; see $work/$name.log"
    log "$name: driving the server (pid $server)"
    $cmp tagwatch --system "$name" --url "http://127.0.0.1:$port" --token "$token" \
        --pid "$server" --data "$data" --out "$work/$name.json" ${vacuum:+--vacuum-url "$url"}
    kill -TERM "$server"
    wait "$server" || true
    server=
    $cmp disk --database-url "$url" --out "$work/$name.disk.json"
    unset DATABASE_URL
}

if has tagwatch-sqlite; then
    rm -rf "$work/tw-sqlite"
    mkdir -p "$work/tw-sqlite"
    run_tagwatch tagwatch-sqlite "sqlite://$work/tw-sqlite/tw.db" 18091
fi
if has tagwatch-postgres; then
    psql -X -q -v ON_ERROR_STOP=1 "$pg/postgres" \
        -c 'DROP DATABASE IF EXISTS tw_compare_tagwatch WITH (FORCE)' \
        -c 'CREATE DATABASE tw_compare_tagwatch' \
        -c 'ALTER DATABASE tw_compare_tagwatch SET jit = off'
    # VACUUM ANALYZE after its load, as PostGIS gets (autovacuum may be off on the server)
    vacuum=1 run_tagwatch tagwatch-postgres "$pg/tw_compare_tagwatch" 18092
fi

# --- PostGIS -----------------------------------------------------------------------------
if has postgis; then
    log "postgis: loading and measuring (database tw_compare_postgis)"
    $cmp postgis --admin-url "$pg/postgres" --database tw_compare_postgis \
        --data "$data" --out "$work/postgis.json"
fi

# --- report ------------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
ram=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
pgv=$(psql -X "$pg/postgres" -Atc "SHOW server_version" | cut -d' ' -f1)
postgis_v=$(psql -X "$pg/tw_compare_postgis" -Atc "SELECT extversion FROM pg_extension WHERE extname = 'postgis'" 2>/dev/null || echo '?')
$cmp report --dir "$work" --markdown target/compare/results.md \
    --machine "$(nproc) cores ($cpu), $ram GiB RAM, PostgreSQL $pgv, PostGIS $postgis_v" \
    --command "$command" --date "$(date -u '+%Y-%m-%d %H:%M UTC')"
log "written target/compare/results.md"
