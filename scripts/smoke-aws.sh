#!/usr/bin/env bash
# Smoke test of a deployed stack: saves a store and an offer of its own through admin-api,
# then posts a person's onboarding (push token, consents) and a short walk into the store
# through events-api, as the demo day does, and checks that a push went out (a decision with
# the verdict `sent`: its delivery committed and handed to SNS).
#
#   NEARCAST_API=https://abc123.execute-api.eu-north-1.amazonaws.com \
#   NEARCAST_ADMIN_TOKEN=<an editor's or admin's JWT from the marketers' user pool> \
#   NEARCAST_DEVICE_TOKEN=<a device JWT; its `sub` is the person> \
#   bash scripts/smoke-aws.sh
#
# NEARCAST_API is the stack's `ApiUrl` output. With the template's default NEARCAST_DEVICE_AUTH
# (jwt), events-api serves only the person named by the device token's `sub`; the script reads
# it from the token (NEARCAST_USER overrides, for a stack without device auth, where no device
# token is needed).
#
# Run it against a test stage, not a production one: it saves `smoke-test-store` (a circle on
# the water off Helsinki's market square, apart from every demo store) and `smoke-test-offer`
# (on entering it, any hour, any weather, threshold 0) and a cap policy without quiet hours
# (so that the check does not depend on the hour), and gives the person a made-up APNs token
# (SNS accepts it; no phone receives the push). Not run in CI, which has no AWS. Needs python3
# and the network; nothing else. Exit status 0 when a push went out. Checked against
# `nearcast serve --backend aws` on moto (pushes to the outbox).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NEARCAST_API:?set NEARCAST_API to the stack's ApiUrl output}"
: "${NEARCAST_ADMIN_TOKEN:?set NEARCAST_ADMIN_TOKEN to a marketer's JWT (editor or admin)}"
exec python3 - "$@" <<'EOF'
import base64, datetime, json, os, sys, urllib.error, urllib.request

api = os.environ["NEARCAST_API"].rstrip("/")
admin = os.environ["NEARCAST_ADMIN_TOKEN"]
device = os.environ.get("NEARCAST_DEVICE_TOKEN", "")

def sub_of(token):
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload))["sub"]
    except (IndexError, ValueError, KeyError):
        return None

user = os.environ.get("NEARCAST_USER") or sub_of(device)
if not user:
    sys.exit("smoke-aws: no person: set NEARCAST_DEVICE_TOKEN (its sub is the person) or NEARCAST_USER")

def call(method, path, body, token):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace")
        sys.exit(f"smoke-aws: {method} {path}: HTTP {e.code}: {text[:500]}")

store = {"id": "smoke-test-store", "name": "Nearcast smoke test", "category": "smoke-test",
         "time_zone": "Europe/Helsinki",
         "fence": {"type": "circle", "lat": 60.1655, "lon": 24.9620, "radius_m": 60}}
offer = {"id": "smoke-test-offer", "campaign_id": "smoke-test", "title": "Smoke test",
         "body": "Nearcast smoke test", "category": "test", "store_ids": [store["id"]],
         "trigger": {"type": "enter"}, "threshold": 0.0}
call("PUT", f"/v1/admin/stores/{store['id']}", store, admin)
call("PUT", f"/v1/admin/offers/{offer['id']}", offer, admin)
call("PUT", "/v1/admin/policy", {"per_day": 10, "per_week": 50, "min_gap_minutes": 0,
     "quiet_start": "00:00:00", "quiet_end": "00:00:00"}, admin)
print("smoke-aws: saved the smoke test's store and offer, and a policy without quiet hours")

now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
stamp = lambda seconds_ago: (now - datetime.timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")
run = now.strftime("%Y%m%d%H%M%S")
onboarding = [
    {"event_id": f"smoke-{run}-token", "type": "push_token", "at": stamp(840), "platform": "apns",
     "token": "%064x" % (int(run) * 7919), "locale": "en-GB"},
] + [
    {"event_id": f"smoke-{run}-{p}", "type": "consent", "at": stamp(839), "purpose": p,
     "granted": True, "policy_version": "2026-10"}
    for p in ("push", "location", "personalisation")
]
status, answer = call("POST", "/v1/events", {"user_id": user, "events": onboarding}, device)
print(f"smoke-aws: onboarding answered {status}")

decisions = []
for k, s in enumerate([store]):
    lat, lon = s["fence"]["lat"], s["fence"]["lon"]
    # From 13 minutes ago (fixes older than 15 minutes are refused): one fix 400 m away, then
    # three inside, 20 s apart (an enter is confirmed over more than one).
    t0 = 780 - 60 * k
    fixes = [
        {"event_id": f"smoke-{run}-{k}-out", "type": "location", "at": stamp(t0),
         "lat": lat + 0.0036, "lon": lon, "accuracy_m": 10},
    ] + [
        {"event_id": f"smoke-{run}-{k}-in{j}", "type": "location", "at": stamp(t0 - 15 - 20 * j),
         "lat": lat, "lon": lon, "accuracy_m": 10}
        for j in range(3)
    ]
    status, answer = call("POST", "/v1/events", {"user_id": user, "events": fixes}, device)
    for r in (answer or {}).get("results", []):
        d = r.get("decision")
        if d:
            decisions.append(d)
            if d.get("verdict") != "none":
                print(f"smoke-aws: {s['name']} ({s['category']}): {d.get('verdict')} "
                      f"{d.get('offer_id') or ''} {d.get('reason') or ''}".rstrip())
    if any(d.get("verdict") == "sent" for d in decisions):
        print("smoke-aws: a push went out")
        sys.exit(0)
sys.exit("smoke-aws: no push went out; the decisions above say why")
EOF
