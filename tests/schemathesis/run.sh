#!/usr/bin/env bash
# API-wide property tests: Schemathesis drives every operation of /openapi.json, once per
# role's token, with every check (no 5xx, status codes / content types / headers / bodies as
# documented, invalid input refused, valid input accepted, auth not ignored, …).
#
# It builds the debug binary (CI has just built it for `cargo test`), starts the service on
# a fresh SQLite store on a free loopback port, creates one user per role with
# `tagwatch user create`, seeds a little data through the API (a subject on the officer's
# caseload, a device, a zone, an absence, pings that open alerts) so that operations with
# ids reach real resources, then runs Schemathesis and always stops the server.
#
# Environment:
#   TAGWATCH_ST_EXAMPLES  Schemathesis --max-examples: generated cases per operation in the
#                         fuzzing and stateful phases (default 10: CI's short run); the
#                         examples and coverage phases are fixed by the schema
#   TAGWATCH_ST_ROLES     roles to run as (default "admin officer analyst auditor device")
#   TAGWATCH_ST_ALL_OPS   1 runs every operation as every role (default: admin all, the
#                         others the operations open to them)
#   TAGWATCH_ST_SEED      Schemathesis seed (default: random, printed in the output)
#   TAGWATCH_ST_REPORT    directory for JUnit reports (default: none)
#   TAGWATCH_ST_KEEP      1 keeps the temp dir (server log, store) for inspection
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
EXAMPLES=${TAGWATCH_ST_EXAMPLES:-10}
ROLES=${TAGWATCH_ST_ROLES:-"admin officer analyst auditor device"}
CONFIG="$PWD/tests/schemathesis/schemathesis.toml"

# Through the module, not the `schemathesis` script: a fresh install's script may not be on
# PATH yet (pyenv shims, ~/.local/bin).
ST=(python3 -m schemathesis.cli)
if [[ "$("${ST[@]}" --version 2>/dev/null || true)" != *", version $SCHEMATHESIS_VERSION" ]]; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION"
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --quiet --bin tagwatch

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "${TAGWATCH_ST_KEEP:-0}" = 1 ]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private copy: other builds in the same target dir must not swap the binary mid-run.
cp target/debug/tagwatch "$WORK/tagwatch"
TW="$WORK/tagwatch"
export DATABASE_URL="sqlite://$WORK/tagwatch.db"
export RUST_LOG=${RUST_LOG:-warn}

declare -A TOKEN
for role in admin officer analyst auditor; do
    TOKEN[$role]=$("$TW" user create --name "st-$role" --role "$role" 2>>"$WORK/server.log")
done

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
"$TW" serve --listen "127.0.0.1:$PORT" 2>>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -sf "$BASE/readyz" >/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf "$BASE/readyz" >/dev/null || { echo "server not ready" >&2; cat "$WORK/server.log" >&2; exit 1; }

# field NAME: that field of the JSON object on stdin.
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# call METHOD PATH TOKEN [JSON] → the response body; fails on a non-2xx answer.
call() {
    curl -sS --fail-with-body -X "$1" "$BASE$2" -H "Authorization: Bearer $3" \
        -H 'content-type: application/json' ${4:+--data "$4"}
}

# --- seed: ids match the examples in the OpenAPI document --------------------------------
OFFICER_ID=$(call GET /v1/me "${TOKEN[officer]}" | field id)
call POST /v1/subjects "${TOKEN[admin]}" \
    "{\"id\":\"GTO-00017\",\"display_name\":\"Test Subject\",\"borough\":\"Camden\",\"officer_id\":$OFFICER_ID}" >/dev/null
TOKEN[device]=$(call POST /v1/devices "${TOKEN[admin]}" '{"id":"TAG-000001","subject_id":"GTO-00017"}' | field token)
call POST /v1/subjects/GTO-00017/zones "${TOKEN[officer]}" \
    '{"kind":"exclusion","name":"Camden Town station","geometry":{"type":"Circle","center":[-0.1426,51.5392],"radius_m":150}}' >/dev/null
call POST /v1/subjects/GTO-00017/absences "${TOKEN[officer]}" \
    "{\"from\":\"$(date -u -d '+1 day' +%FT%TZ)\",\"to\":\"$(date -u -d '+2 days' +%FT%TZ)\",\"reason\":\"hospital appointment\"}" >/dev/null
# Ten minutes of fixes walking into the exclusion zone, the last one reporting tamper: both
# open alerts, so the alert operations have something to read, acknowledge and close.
PINGS=$(python3 - <<'EOF'
import json, datetime
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
out = []
for i in range(10):
    ts = now - datetime.timedelta(minutes=10 - i)
    out.append({"device_id": "TAG-000001", "ts": ts.isoformat().replace("+00:00", "Z"),
                "lat": 51.5300 + i * 0.0010, "lon": -0.1426, "accuracy_m": 5.0, "fix": "gps",
                "battery_pct": 80.0, "tamper": i == 9})
print(json.dumps(out))
EOF
)
call POST /v1/pings "${TOKEN[device]}" "$PINGS" >/dev/null
for _ in $(seq 1 50); do
    [ "$(call GET /v1/alerts "${TOKEN[admin]}" | field items)" != "[]" ] && break
    sleep 0.2
done

# --- run ----------------------------------------------------------------------------------
# The administrator runs every operation (so 403s are met where admins may not go); the other
# roles run the operations open to them, unless TAGWATCH_ST_ALL_OPS=1.
declare -A OPS=(
    [officer]="list_subjects show_subject create_zone list_zones end_zone create_absence list_alerts
               show_alert acknowledge_alert close_alert alert_stream trail boroughs me"
    [analyst]="location_at_time_query crime_scene crime_match boroughs me"
    [auditor]="list_audit verify_audit boroughs me"
    [device]="post_pings osmand osmand_post boroughs me"
)
SEED_ARGS=()
[ -n "${TAGWATCH_ST_SEED:-}" ] && SEED_ARGS=(--seed "$TAGWATCH_ST_SEED")
status=0
for role in $ROLES; do
    echo "=== schemathesis as $role ($EXAMPLES examples per operation)"
    FILTER_ARGS=()
    if [ "${TAGWATCH_ST_ALL_OPS:-0}" != 1 ] && [ -n "${OPS[$role]:-}" ]; then
        for op in ${OPS[$role]}; do FILTER_ARGS+=(--include-operation-id "$op"); done
    fi
    # revoking tokens would revoke this run's own (tests/security.rs tests it on both stores)
    FILTER_ARGS+=(--exclude-operation-id revoke_token)
    REPORT_ARGS=()
    if [ -n "${TAGWATCH_ST_REPORT:-}" ]; then
        REPORT_ARGS=(--report junit --report-junit-path "$(realpath -m "$TAGWATCH_ST_REPORT")/$role.xml")
    fi
    # from the temp dir: Schemathesis keeps its replay cache (.schemathesis/) in the cwd
    (cd "$WORK" && "${ST[@]}" --config-file "$CONFIG" run "$BASE/openapi.json" \
        -H "Authorization: Bearer ${TOKEN[$role]}" \
        --checks all --max-examples "$EXAMPLES" --generation-database none \
        --no-color "${FILTER_ARGS[@]}" "${SEED_ARGS[@]}" "${REPORT_ARGS[@]}") || status=1
done
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "the server died during the run" >&2
    status=1
fi
[ "$status" = 0 ] || { echo "--- server log (tail)"; tail -n 50 "$WORK/server.log"; }
exit "$status"
