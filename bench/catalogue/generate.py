"""A seeded visit log of a retailer whose catalogue the code has never seen.

Writes `nearcast-training/1` records (docs/training-data.md) in the shape of a plain
visit/purchase log: no pushes, so only the fields such a log has, plus `purchased` per
candidate. The world has real, known effects:

- many categories with made-up names (no name the code knows);
- places: every H3 resolution-7 area favours some categories and disfavours others, and
  some resolution-8 neighbourhoods add their own;
- hours of the week: each category has a daily peak hour, and a weekend effect;
- weather: rain moves each category up or down; weather is missing in 0.25 % of visits;
- people with habits: each person strongly likes a few categories, and their logged
  affinity is a noisy view of that taste (only with personalisation consent);
- distance: farther stores sell a little less.

    python bench/catalogue/generate.py --seed 7 --decisions 60000 --out data.jsonl
"""

import argparse
import datetime as dt
import json
import math

import h3
import numpy as np

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zu", "pe", "ri", "xa", "do", "fy", "gu", "ho"]
CENTRE = (60.1699, 24.9384)  # Helsinki
TZ = dt.timezone(dt.timedelta(hours=2))


def name(rng):
    return "".join(rng.choice(SYLLABLES, size=3)) + "-" + "".join(rng.choice(SYLLABLES, size=2))


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def daypart(hour):
    if 6 <= hour < 11:
        return "morning"
    if 11 <= hour < 14:
        return "midday"
    if 14 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 21:
        return "evening"
    return "night"


def offset(lat, lon, metres, bearing):
    dlat = metres * math.cos(bearing) / 111_320.0
    dlon = metres * math.sin(bearing) / (111_320.0 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def distance_m(a, b):
    dlat = (a[0] - b[0]) * 111_320.0
    dlon = (a[1] - b[1]) * 111_320.0 * math.cos(math.radians(a[0]))
    return math.hypot(dlat, dlon)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--decisions", type=int, default=60_000)
    p.add_argument("--users", type=int, default=3_000)
    p.add_argument("--categories", type=int, default=40)
    p.add_argument("--stores", type=int, default=120)
    p.add_argument("--days", type=int, default=42)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)

    cats = []
    while len(cats) < a.categories:
        n = name(rng)
        if n not in cats:
            cats.append(n)
    base = rng.normal(-3.4, 0.4, len(cats))
    peak = rng.integers(0, 24, len(cats))
    hour_amp = rng.uniform(0.3, 1.2, len(cats))
    weekend = rng.normal(0.0, 0.5, len(cats))
    rain = rng.normal(0.0, 0.7, len(cats))

    # Stores within about 12 km of the centre, each selling 6 to 12 categories.
    stores = []
    for s in range(a.stores):
        lat, lon = offset(*CENTRE, rng.uniform(0, 12_000), rng.uniform(0, 2 * math.pi))
        sold = rng.choice(len(cats), size=rng.integers(6, 13), replace=False)
        stores.append({"id": f"st-{s:03d}", "pos": (lat, lon), "cats": sold})
    area_effect = {}
    hood_effect = {}

    def area(cell9, res, table, scale, share):
        key = h3.cell_to_parent(cell9, res)
        if key not in table:
            e = rng.normal(0.0, scale, len(cats))
            e[rng.random(len(cats)) > share] = 0.0
            table[key] = e
        return table[key]

    # People: a home store, a few strongly liked categories, consent.
    users = []
    for u in range(a.users):
        taste = rng.normal(-0.3, 0.3, len(cats))
        fav = rng.choice(len(cats), size=rng.integers(2, 5), replace=False)
        taste[fav] += rng.uniform(1.2, 2.4, len(fav))
        users.append({
            "id": f"u-{u:05d}",
            "home": int(rng.integers(0, a.stores)),
            "taste": taste,
            "consent": rng.random() < 0.8,
            # Logged affinity: a noisy squash of the taste.
            "affinity": np.clip(1 / (1 + np.exp(-(taste - 0.5))) + rng.normal(0, 0.08, len(cats)), 0, 1),
        })

    start = dt.datetime(2026, 9, 28, tzinfo=TZ)
    times = np.sort(rng.uniform(0, a.days * 86400, a.decisions))
    with open(a.out, "w") as out:
        for i, t in enumerate(times):
            user = users[int(rng.integers(0, a.users))]
            # Visits: mostly the home store or a store near it, sometimes anywhere.
            if rng.random() < 0.7:
                home = stores[user["home"]]["pos"]
                near = sorted(range(a.stores), key=lambda s: distance_m(stores[s]["pos"], home))[:4]
                s = int(rng.choice(near))
            else:
                s = int(rng.integers(0, a.stores))
            store = stores[s]
            fix = offset(*store["pos"], abs(rng.normal(0, 60)), rng.uniform(0, 2 * math.pi))
            cell = h3.latlng_to_cell(fix[0], fix[1], 9)
            local = start + dt.timedelta(seconds=float(t))
            # Visits cluster in the day.
            local = local.replace(hour=int(np.clip(rng.normal(14, 4), 6, 22)))
            hour, wd = local.hour, local.weekday()
            weather = None
            wet = False
            if rng.random() >= 0.0025:
                wet = rng.random() < 0.3
                cond = "rain" if wet else str(rng.choice(["clear", "cloudy"]))
                weather = {"condition": cond, "temp_c": round(float(rng.normal(8, 6)), 1)}
            # Candidates: the store's categories, and those of another store within 400 m.
            pairs = [(s, int(c)) for c in store["cats"]]
            others = [o for o in range(a.stores) if o != s and distance_m(stores[o]["pos"], fix) < 400]
            if others:
                o = int(rng.choice(others))
                pairs += [(o, int(c)) for c in stores[o]["cats"][:4]]
            a7 = area(cell, 7, area_effect, 1.0, 0.5)
            a8 = area(cell, 8, hood_effect, 0.8, 0.25)
            candidates = []
            for st, c in pairs:
                d = distance_m(stores[st]["pos"], fix)
                z = (base[c] + user["taste"][c] + a7[c] + a8[c]
                     + hour_amp[c] * math.cos(2 * math.pi * (hour - peak[c]) / 24)
                     + (weekend[c] if wd >= 5 else 0.0)
                     + (rain[c] if wet else 0.0)
                     - 0.002 * d)
                candidates.append({
                    "offer_id": f"off-{cats[c]}-{st % 3}",
                    "category": cats[c],
                    "store_id": stores[st]["id"],
                    "distance_m": round(d, 2),
                    "affinity": round(float(user["affinity"][c]), 3) if user["consent"] else None,
                    "purchased": bool(rng.random() < sigmoid(z)),
                })
            at = local.astimezone(dt.timezone.utc)
            record = {
                "format": "nearcast-training/1",
                "decision_id": f"v{i:07d}",
                "user": user["id"],
                "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "local_time": local.isoformat(),
                "daypart": daypart(hour),
                "weekday": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][wd],
                "weekend": wd >= 5,
                "cell": cell,
                "weather": weather,
                "personalised": user["consent"],
                "candidates": candidates,
            }
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
