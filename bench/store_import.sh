#!/usr/bin/env bash
# Store import through `nearcast serve`: a CSV of STORES stores (the real Helsinki
# OpenStreetMap extract, bench/data/helsinki_osm_pois.csv, replicated onto a grid of
# offsets: same names, categories and density, 1,711 per copy) posted to
# POST /v1/admin/stores/import as a dry run, then applied, then posted again unchanged;
# and, side by side, single-store PUTs into the same catalog (each rebuilds the catalog).
# Prints wall time per request (curl) and the server's peak RSS. Results: docs/performance.md.
#
#   bench/store_import.sh                 # 100,000 stores, 3 runs of each
#   STORES=10000 RUNS=5 bench/store_import.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STORES="${STORES:-100000}"
RUNS="${RUNS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nearcast-target}"
cargo build --release -q -p nearcast
bin="$CARGO_TARGET_DIR/release/nearcast"
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
for r in $(seq "$RUNS"); do
    t=$(curl -s -o /dev/null -w '%{time_total}' -X PUT -H 'content-type: application/json' \
        --data "{\"id\":\"one-$r\",\"name\":\"One\",\"category\":\"cafe\",\"time_zone\":\"Europe/Helsinki\",\"fence\":{\"type\":\"circle\",\"lat\":60.17,\"lon\":24.94,\"radius_m\":50}}" \
        "$url/v1/admin/stores/one-$r")
    echo "one PUT      $t s"
done
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
