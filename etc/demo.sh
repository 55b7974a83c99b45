#!/usr/bin/env bash
# Offline demo: starts the mock exchange and binance-ingest against it on
# loopback, over TLS with a CA made at run time, lets them run for
# DEMO_SECONDS (default 30; Ctrl-C stops earlier), then stops both cleanly
# and shows what was written.
#
#   etc/demo.sh [DIR]          generated trade, depth and bookTicker streams
#   DEMO_REPLAY=FILE etc/demo.sh   replay a JSON Lines capture instead
set -euo pipefail

dir=${1:-./demo}
seconds=${DEMO_SECONDS:-30}
http=${DEMO_HTTP_ADDR:-127.0.0.1:9781}
rate=${DEMO_RATE:-50}
streams=${DEMO_STREAMS:-btcusdt@trade,btcusdt@depth@100ms,btcusdt@bookTicker,ethusdt@aggTrade}
bin=${BIN_DIR:-./target/release}

for program in "$bin/mock-exchange" "$bin/binance-ingest"; do
  [ -x "$program" ] || { echo "demo: $program not found; run 'make build' first" >&2; exit 1; }
done

rm -rf "$dir"
mkdir -p "$dir"
mock_args=(--listen 127.0.0.1:0 --ca-out "$dir/ca.pem" --ready-file "$dir/mock.addr"
           --sent-log "$dir/sent.jsonl" --rate "$rate")
if [ -n "${DEMO_REPLAY:-}" ]; then
  [ -r "$DEMO_REPLAY" ] || { echo "demo: cannot read DEMO_REPLAY=$DEMO_REPLAY" >&2; exit 1; }
  mock_args+=(--replay "$DEMO_REPLAY" --no-generate)
  # Subscribe to exactly the streams the capture contains.
  streams=$(grep -o '"stream":"[^"]*"' "$DEMO_REPLAY" | cut -d'"' -f4 | sort -u | paste -sd, -)
fi

mock_pid= service_pid=
cleanup() {
  [ -n "$service_pid" ] && kill -TERM "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null || true
  [ -n "$mock_pid" ] && kill -TERM "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted, stopping"; exit 0' INT TERM

"$bin/mock-exchange" "${mock_args[@]}" 2>"$dir/mock.log" &
mock_pid=$!
for _ in $(seq 1 100); do
  [ -s "$dir/mock.addr" ] && break
  sleep 0.1
done
[ -s "$dir/mock.addr" ] || { echo "demo: mock exchange did not start; see $dir/mock.log" >&2; exit 1; }
port=$(cut -d: -f2 < "$dir/mock.addr")
echo "mock exchange listening on 127.0.0.1:$port (CA certificate $dir/ca.pem)"

BINANCE_INGEST_ENDPOINT="wss://localhost:$port" \
BINANCE_INGEST_CA_FILE="$dir/ca.pem" \
BINANCE_INGEST_STREAMS="$streams" \
BINANCE_INGEST_DATA_DIR="$dir/data" \
BINANCE_INGEST_HTTP_ADDR="$http" \
BINANCE_INGEST_INSTANCE=demo \
  "$bin/binance-ingest" run 2>"$dir/service.log" &
service_pid=$!

ready=no
for _ in $(seq 1 100); do
  if curl -fsS --max-time 2 "http://$http/readyz" >/dev/null 2>&1; then ready=yes; break; fi
  kill -0 "$service_pid" 2>/dev/null || break
  sleep 0.1
done
if [ "$ready" != yes ]; then
  echo "demo: binance-ingest did not become ready; last log lines:" >&2
  tail -n 20 "$dir/service.log" >&2
  exit 1
fi

cat <<MSG
binance-ingest is ready and writing to $dir/data
Try, in another terminal, while the demo runs ($seconds s, Ctrl-C to stop earlier):
  curl -s http://$http/readyz
  curl -s http://$http/metrics | grep -E '^binance_ingest_(events|frames_received)_total'
  curl -s 'http://$http/recent?stream=btcusdt%40trade&limit=3'
Logs: $dir/service.log and $dir/mock.log
MSG

end=$((SECONDS + seconds))
while [ $SECONDS -lt $end ] && kill -0 "$service_pid" 2>/dev/null; do
  sleep 1
done

kill -TERM "$service_pid" 2>/dev/null || true
wait "$service_pid" || { echo "demo: binance-ingest exited with status $?" >&2; exit 1; }
service_pid=
# The mock flushes its sent-log every 100 ms and at exit, so stop it before
# comparing its count with what was stored.
kill -TERM "$mock_pid" 2>/dev/null || true
wait "$mock_pid" 2>/dev/null || true
mock_pid=
echo
echo "stopped cleanly; files written:"
find "$dir/data" -name '*.jsonl' -printf '%s bytes  %p\n' | sort -k3
lines=$(find "$dir/data" -path '*/_gaps' -prune -o -name '*.jsonl' -print0 | xargs -0 cat | wc -l)
sent=$(grep -c '"stream"' "$dir/sent.jsonl" || true)
echo "events stored: $lines; data events the mock exchange sent: $sent"
first=$(find "$dir/data" -path '*/_gaps' -prune -o -name '*.jsonl' -print | sort | head -n 1)
echo "first line of $first:"
head -n 1 "$first" | cut -c 1-300
cat <<MSG

Query it, for example with DuckDB:
  SELECT stream, count(*) FROM read_json('$dir/data/venue=*/*/*/*/*.jsonl', hive_partitioning = true,
    columns = {recv_ns: 'UBIGINT', venue: 'VARCHAR', stream: 'VARCHAR', conn: 'UBIGINT', data: 'JSON'})
  GROUP BY stream;
or with jq:
  cat $dir/data/venue=*/stream=btcusdt@trade/*/*/*.jsonl | jq -c '.data | {t, p, q}' | head
MSG
