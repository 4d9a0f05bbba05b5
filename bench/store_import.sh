#!/usr/bin/env bash
# Store import through `nearcast serve`: a CSV of STORES stores (the real Helsinki
# OpenStreetMap extract, bench/data/helsinki_osm_pois.csv, replicated onto a grid of
# offsets: same names, categories and density, 1,711 per copy) posted to
# POST /v1/admin/stores/import as a dry run, then applied, then posted again unchanged;
# and then single store changes into the same catalog, CHANGES of each kind: a new store
# (PUT), an existing store moved 40 m (PUT), a store removed (DELETE); their median and
# slowest time. Prints wall time per request (curl) and the server's peak RSS. Results:
# docs/performance.md.
#
#   bench/store_import.sh                 # 100,000 stores, 3 runs of each import, 20 changes
#   STORES=10000 RUNS=5 CHANGES=50 bench/store_import.sh
#   BUILD=0 SERVER_BIN=<other nearcast binary> bench/store_import.sh   # side by side
set -euo pipefail
cd "$(dirname "$0")/.."
STORES="${STORES:-100000}"
RUNS="${RUNS:-3}"
CHANGES="${CHANGES:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nearcast-target}"
[ "${BUILD:-1}" = 0 ] || cargo build --release -q -p nearcast
bin="${SERVER_BIN:-$CARGO_TARGET_DIR/release/nearcast}"
work="$(mktemp -d -t nearcast-import.XXXXXX)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$STORES" "$work/stores.csv" <<'PY'
import csv, random, sys
n, out = int(sys.argv[1]), sys.argv[2]
rows = list(csv.DictReader(open("bench/data/helsinki_osm_pois.csv", encoding="utf-8")))
random.seed(1)
with open(out, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["id", "name", "category", "lat", "lon", "radius_m"])
    for i in range(n):
        r, k = rows[i % len(rows)], i // len(rows)
        w.writerow([f"s{i}", r["name"], r["shop"] or r["amenity"] or r["tourism"],
                    round(float(r["lat"]) + (k % 8) * 0.05, 7),
                    round(float(r["lon"]) + (k // 8) * 0.1, 7), random.choice([30, 50, 80])])
PY
"$bin" serve --addr 127.0.0.1:0 --db "$work/n.db" --outbox "$work/outbox.jsonl" >"$work/serve.out" 2>/dev/null &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url="$(sed -n 's/.*listening on //p' "$work/serve.out")"
echo "stores: $STORES ($(wc -c <"$work/stores.csv") bytes of CSV), runs: $RUNS"
post() {
    curl -s -o "$work/answer.json" -w '%{time_total}' -H 'content-type: text/csv' \
        --data-binary @"$work/stores.csv" "$url/v1/admin/stores/import?time_zone=Europe/Helsinki$1"
}
summary() { python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); print(" ".join(f"{k}={a.get(k)}" for k in ("applied","created","updated","unchanged","stores")))' "$work/answer.json"; }
for r in $(seq "$RUNS"); do echo "dry run      $(post '&dry_run=true') s  $(summary)"; done
echo "applied      $(post '') s  $(summary)"
for r in $(seq "$RUNS"); do echo "again, same  $(post '') s  $(summary)"; done
store_json() { # id lat
    echo "{\"id\":\"$1\",\"name\":\"One\",\"category\":\"cafe\",\"time_zone\":\"Europe/Helsinki\",\"fence\":{\"type\":\"circle\",\"lat\":$2,\"lon\":24.94,\"radius_m\":50}}"
}
change() { # method id [lat]
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X "$1" -H 'content-type: application/json' \
        ${3:+--data "$(store_json "$2" "$3")"} "$url/v1/admin/stores/$2"
}
stats() { # label: reads "code seconds" lines
    python3 -c '
import sys, statistics
rows = [l.split() for l in sys.stdin if l.strip()]
bad = [c for c, _ in rows if not c.startswith("2")]
t = sorted(float(s) * 1000 for _, s in rows)
print(f"{sys.argv[1]:<13}{len(t)} requests, median {statistics.median(t):.2f} ms, slowest {t[-1]:.2f} ms" + (f", {len(bad)} not 2xx: {bad[:3]}" if bad else ""))' "$1"
}
for r in $(seq "$CHANGES"); do change PUT "one-$r" 60.17; done | stats "new store"
for r in $(seq "$CHANGES"); do change PUT "one-$r" 60.1704; done | stats "moved 40 m"
for r in $(seq "$CHANGES"); do change DELETE "one-$r"; done | stats "removed"
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
