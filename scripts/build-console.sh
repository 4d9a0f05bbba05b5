#!/usr/bin/env bash
# Builds the marketer console into crates/nearcast-console/dist: the page, its script and
# style, and Leaflet from npm (pinned in crates/nearcast-console/package-lock.json; npm's
# cache lives outside the clone, in NEARCAST_NPM_CACHE). `nearcast serve` serves the
# folder at /console/; on AWS it is what goes to the console's bucket.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
app="$here/crates/nearcast-console"
cache="${NEARCAST_NPM_CACHE:-$HOME/.cache/nearcast-npm}"

command -v npm >/dev/null || { echo "build-console: npm is needed (Node.js 18 or later)" >&2; exit 1; }
# node_modules is reinstalled only when the lockfile changed since the last install.
stamp="$app/node_modules/.nearcast-lock"
if ! cmp -s "$app/package-lock.json" "$stamp" 2>/dev/null; then
  (cd "$app" && npm ci --no-audit --no-fund --cache "$cache" --prefer-offline >/dev/null)
  cp "$app/package-lock.json" "$stamp"
fi

dist="$app/dist"
rm -rf "$dist.tmp"
mkdir -p "$dist.tmp/vendor/leaflet"
cp "$app"/src/index.html "$app"/src/app.js "$app"/src/app.css "$dist.tmp/"
cp -r "$app"/node_modules/leaflet/dist/leaflet.js "$app"/node_modules/leaflet/dist/leaflet.css \
  "$app"/node_modules/leaflet/dist/images "$dist.tmp/vendor/leaflet/"
cp "$app"/node_modules/leaflet/LICENSE "$dist.tmp/vendor/leaflet/LICENSE"
rm -rf "$dist"
mv "$dist.tmp" "$dist"
echo "console built in ${dist#$here/} ($(du -sk "$dist" | cut -f1) KiB)"
