// The marketer console, walked end to end in a real browser (Debian's chromium, driven
// by playwright-core): sign in as a viewer and as an admin, import the Helsinki stores
// with two bad rows, the fences on the map and the API's validation messages, a campaign
// with its push preview, the simulator, activation, the demo day replayed, the results,
// a pause in the audit log, why a person was not sent an offer, and a presence webhook
// that failed every attempt, sent again.
//
// Run by scripts/console-test.sh (which builds the console and the binary and installs
// chromium when it is missing). Each step saves a screenshot in $CONSOLE_OUT and checks
// what the page shows; any failed check ends the run with a non-zero status.

import { createRequire } from "node:module";
import { spawn, execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import fs from "node:fs";
import path from "node:path";
import http from "node:http";
import crypto from "node:crypto";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(path.join(root, "crates/nearcast-console/package.json"));
const { chromium } = require("playwright-core");

const bin = process.env.NEARCAST_BIN;
const out = process.env.CONSOLE_OUT;
if (!bin || !out) throw new Error("NEARCAST_BIN and CONSOLE_OUT must be set (scripts/console-test.sh sets them)");
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
const work = fs.mkdtempSync(path.join(out, "work-"));
const db = path.join(work, "nearcast.db");
const outbox = path.join(work, "outbox.jsonl");
const keys = path.join(work, "keys.json");
const events = path.join(root, "events");

let failures = 0;
function check(ok, what) {
  if (ok) {
    console.log(`  ok    ${what}`);
  } else {
    failures++;
    console.log(`  FAIL  ${what}`);
    throw new Error(`check failed: ${what}`);
  }
}

function key(name, role) {
  return execFileSync(bin, ["admin-key", "--name", name, "--role", role, "--keys", keys], { stdio: ["ignore", "pipe", "ignore"] })
    .toString().trim();
}

/** `nearcast serve` on a free loopback port; resolves with its base URL. */
function serve(addr = "127.0.0.1:0") {
  const p = spawn(bin, ["serve", "--addr", addr, "--db", db, "--outbox", outbox, "--config", events,
    "--weather", path.join(events, "weather.json"), "--admin-keys", keys,
    "--console", consoleDir], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
  let log = "";
  p.stderr.on("data", (d) => (log += d));
  return new Promise((resolve, reject) => {
    let text = "";
    p.stdout.on("data", (d) => {
      text += d;
      const m = /nearcast listening on (http:\/\/[0-9.:]+)/.exec(text);
      if (m) resolve({ proc: p, base: m[1] });
    });
    p.on("exit", (code) => reject(new Error(`nearcast serve exited (${code}): ${log}`)));
  });
}

async function stop(server) {
  if (server.proc.exitCode !== null || server.proc.signalCode !== null) return;
  const done = new Promise((r) => server.proc.once("exit", r));
  server.proc.kill("SIGINT");
  await done;
}

let step = 0;
async function shot(page, name) {
  step++;
  const file = path.join(out, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  console.log(`  shot  ${path.relative(root, file)}`);
  // CONSOLE_DOCS=docs/console refreshes the pictures of docs/console.md (JPEG, smaller).
  if (process.env.CONSOLE_DOCS) {
    await page.screenshot({ path: path.join(process.env.CONSOLE_DOCS, `${name}.jpg`), type: "jpeg", quality: 60 });
  }
}

const text = async (page, sel) => ((await page.locator(sel).first().textContent()) || "").trim();

async function signIn(page, k) {
  await page.locator("#key").fill(k);
  await page.locator("#sign-in-form button[type=submit]").click();
  await page.locator("#app").waitFor({ state: "visible" });
}

/** Visible text whose contrast with what is behind it is under WCAG AA (4.5:1, or 3:1
 * for large text: 24 px, or 18.66 px bold), colours composited through every ancestor's
 * background (alpha included) over white. Disabled controls are exempt, as WCAG says. */
async function lowContrast(page) {
  return page.evaluate(() => {
    const rgba = (c) => {
      const m = /rgba?\(([^)]+)\)/.exec(c);
      if (!m) return [0, 0, 0, 0];
      const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    };
    const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3]));
    const lum = (c) => {
      const [r, g, b] = c.map((v) => {
        const x = v / 255;
        return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const problems = [];
    let checked = 0;
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    while (walker.nextNode()) {
      const el = walker.currentNode.parentElement;
      if (!el || seen.has(el) || !walker.currentNode.textContent.trim()) continue;
      seen.add(el);
      if (!el.checkVisibility || !el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) continue;
      if (el.closest(":disabled, [aria-disabled=true], .leaflet-container")) continue;
      checked++;
      const chain = [];
      for (let e = el; e; e = e.parentElement) chain.unshift(e);
      let bg = [255, 255, 255];
      for (const e of chain) bg = over(rgba(getComputedStyle(e).backgroundColor), bg);
      const st = getComputedStyle(el);
      const fg = over(rgba(st.color), bg);
      const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      const ratio = (a + 0.05) / (b + 0.05);
      const size = parseFloat(st.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) problems.push(`${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""} "${walker.currentNode.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1`);
    }
    return { problems, checked };
  });
}

async function openTab(page, name) {
  await page.locator(`#tab-${name}`).click();
  await page.locator(`#pane-${name}`).waitFor({ state: "visible" });
}

/** Clicks the map at a place (the map is moved there first). */
async function clickAt(page, lat, lon) {
  const pt = await page.evaluate(([lat, lon]) => {
    const m = window.nearcastConsole.map;
    const p = m.latLngToContainerPoint([lat, lon]);
    return { x: p.x, y: p.y };
  }, [lat, lon]);
  await page.locator("#map").click({ position: pt });
}

const viewerKey = key("vic", "viewer");
const adminKey = key("ada", "admin");

// A stand-in for the marketers' identity provider (on AWS, the user pool's hosted sign-in):
// the authorization-code flow with PKCE, checked as a provider checks it (S256 challenge,
// one use per code, the verifier against the challenge, the client and redirect URI). The
// token it issues is the admin's API key, which this server takes as a bearer token.
const idp = { asked: [], issued: 0, refused: 0, forgeState: false, codes: new Map() };
const idpServer = http.createServer(async (req, res) => {
  const u = new URL(req.url, "http://127.0.0.1");
  if (u.pathname === "/authorize") {
    const p = Object.fromEntries(u.searchParams);
    idp.asked.push(p);
    const back = new URL(p.redirect_uri || server.base);
    const ok = p.response_type === "code" && p.client_id === "console-test" && p.code_challenge_method === "S256"
      && /^[A-Za-z0-9_-]{43}$/.test(p.code_challenge || "") && p.state && (p.redirect_uri || "").startsWith(`${server.base}/console/`);
    if (ok) {
      const code = crypto.randomBytes(16).toString("hex");
      idp.codes.set(code, { challenge: p.code_challenge, redirect: p.redirect_uri });
      back.searchParams.set("code", code);
      back.searchParams.set("state", idp.forgeState ? "forged" : p.state);
    } else {
      back.searchParams.set("error", "invalid_request");
    }
    res.writeHead(302, { Location: back.toString() });
    res.end();
    return;
  }
  if (u.pathname === "/token" && req.method === "POST") {
    let body = "";
    for await (const c of req) body += c;
    const f = new URLSearchParams(body);
    const grant = idp.codes.get(f.get("code"));
    idp.codes.delete(f.get("code"));
    const hash = crypto.createHash("sha256").update(f.get("code_verifier") || "").digest("base64url");
    const headers = { "Access-Control-Allow-Origin": server.base, "Content-Type": "application/json" };
    if (!grant || f.get("grant_type") !== "authorization_code" || f.get("client_id") !== "console-test"
      || f.get("redirect_uri") !== grant.redirect || hash !== grant.challenge) {
      idp.refused++;
      res.writeHead(400, headers);
      res.end(JSON.stringify({ error: "invalid_grant" }));
      return;
    }
    idp.issued++;
    res.writeHead(200, headers);
    res.end(JSON.stringify({ id_token: adminKey, access_token: "not-this-one", token_type: "Bearer", expires_in: 3600 }));
    return;
  }
  res.writeHead(404);
  res.end();
});
await new Promise((r) => idpServer.listen(0, "127.0.0.1", r));
const idpBase = `http://127.0.0.1:${idpServer.address().port}`;
// The console as hosted next to that provider: its files and a config.json naming it.
const consoleDir = path.join(work, "console");
fs.cpSync(path.join(root, "crates/nearcast-console/dist"), consoleDir, { recursive: true });
fs.writeFileSync(path.join(consoleDir, "config.json"), JSON.stringify({
  oidc: { label: "Example Retail", authorization_endpoint: `${idpBase}/authorize`, token_endpoint: `${idpBase}/token`, client_id: "console-test", scope: "openid email" },
}));

let server = await serve();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, timezoneId: "Europe/Helsinki", locale: "en-GB" });
// The machine reaches only loopback: map tiles and anything else off this server fail at once.
await context.route("**/*", (route) => {
  const u = new URL(route.request().url());
  return u.hostname === "127.0.0.1" ? route.continue() : route.abort();
});
const page = await context.newPage();
page.on("dialog", (d) => d.accept());
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));

try {
  // 1. Sign in as a viewer: everything visible, nothing changeable.
  console.log("1. sign in; a viewer sees everything and can change nothing");
  await page.goto(`${server.base}/console/`);
  await page.locator("#sign-in").waitFor({ state: "visible" });
  await shot(page, "sign-in");
  await page.locator("#key").fill("not-a-key");
  await page.locator("#sign-in-form button[type=submit]").click();
  await page.waitForFunction(() => document.querySelector("#sign-in-error").textContent.length > 0);
  check(await page.locator("#app").isHidden(), "a wrong key shows nothing of the console");
  check((await text(page, "#sign-in-error")).includes("not one of this server's keys"), "a wrong key is refused with the API's message");
  await signIn(page, viewerKey);
  const whoText = await text(page, "#who");
  check(whoText.includes("vic (viewer)"), `the header names the viewer and the role: ${whoText}`);
  await page.waitForFunction(() => Number(document.querySelector("#map").dataset.fences || 0) > 0);
  const viewerFences = Number(await page.locator("#map").getAttribute("data-fences"));
  check(viewerFences > 10, `the viewer sees the demo's fences on the map (${viewerFences})`);
  check(await page.locator("#store-form button[type=submit]").isDisabled(), "Save store is disabled for a viewer");
  await openTab(page, "campaigns");
  await page.locator("#campaign-list tbody tr").first().waitFor();
  check((await page.locator("#campaign-list tbody tr").count()) >= 1, "the viewer sees the campaigns");
  const activeButtons = page.locator("#campaign-list button");
  check((await activeButtons.count()) > 0 && (await activeButtons.evaluateAll((bs) => bs.every((b) => b.disabled))), "every status button is disabled for a viewer");
  const refused = await page.evaluate(async (k) => {
    const r = await fetch("/v1/admin/policy", { method: "PUT", headers: { Authorization: `Bearer ${k}`, "Content-Type": "application/json" }, body: "{}" });
    return r.status;
  }, viewerKey);
  check(refused === 403, "and the API refuses the viewer's write (403)");
  await shot(page, "viewer");
  await openTab(page, "webhooks");
  check((await text(page, "#webhooks-status")).startsWith("Only an admin sees the dead letters"), "the Webhooks screen tells a viewer that dead letters are for admins");
  const deadForViewer = await page.evaluate(async (k) => (await fetch("/v1/admin/webhooks/dead-letters", { headers: { Authorization: `Bearer ${k}` } })).status, viewerKey);
  check(deadForViewer === 403, "and the API refuses the viewer the list (403)");
  await page.locator("#sign-out").click();
  await page.locator("#sign-in").waitFor({ state: "visible" });
  // Single sign-on through the provider config.json names (OIDC, code flow with PKCE).
  check((await text(page, "#sso-button")) === "Sign in with Example Retail", `the sign-in offers the organisation's provider: ${await text(page, "#sso-button")}`);
  idp.forgeState = true;
  await page.locator("#sso-button").click();
  // Through the provider and back: the predicate also runs on the pages in between.
  await page.waitForFunction(() => (document.querySelector("#sign-in-error")?.textContent || "").includes("state"));
  check(!page.url().includes("code=") && (await page.locator("#app").isHidden()), `an answer with a forged state is refused: ${await text(page, "#sign-in-error")}`);
  check(idp.issued === 0 && idp.refused === 0, "and its code is never exchanged");
  idp.forgeState = false;
  await page.locator("#sso-button").click();
  await page.locator("#app").waitFor({ state: "visible" });
  const asked = idp.asked[idp.asked.length - 1];
  check(asked.code_challenge_method === "S256" && asked.redirect_uri === `${server.base}/console/`, "the provider is asked for a code with an S256 challenge, back to the console");
  check(idp.issued === 1 && idp.refused === 0, "the code is exchanged once, with the verifier that matches its challenge");
  check(!page.url().includes("code="), `the code is gone from the address bar: ${page.url()}`);
  check((await text(page, "#who")).includes("ada (admin)"), "signed in through the provider as an admin");

  // Keyboard: the tabs move with the arrow keys.
  await page.locator("#tab-stores").focus();
  await page.keyboard.press("ArrowRight");
  check(await page.locator("#tab-campaigns").evaluate((t) => t === document.activeElement && t.getAttribute("aria-selected") === "true"), "ArrowRight moves to the next tab");
  await page.keyboard.press("ArrowLeft");
  check(await page.locator("#pane-stores").isVisible(), "ArrowLeft moves back");
  const unlabelled = await page.evaluate(() => Array.from(document.querySelectorAll("input, select, textarea"))
    .filter((e) => e.type !== "hidden" && e.labels.length === 0 && !e.getAttribute("aria-label"))
    .map((e) => e.id || e.name));
  check(unlabelled.length === 0, `every field has a label (${unlabelled.join(", ") || "none missing"})`);

  // 2. Import the Helsinki stores from CSV, with two bad rows.
  console.log("2. import the Helsinki stores from CSV with two bad rows");
  const csv = fs.readFileSync(path.join(root, "bench/data/helsinki_osm_pois.csv"), "utf8").trimEnd().split("\n");
  const header = csv[0];
  const rows = csv.slice(1);
  rows.splice(9, 0, "node,990000001,Broken latitude,supermarket,,,,95.5,24.94,2024-01-01 00:00:00+00:00");
  rows.splice(19, 0, "node,990000002,Nowhere,cafe,,,,,,2024-01-01 00:00:00+00:00");
  const file = path.join(work, "helsinki-stores.csv");
  fs.writeFileSync(file, [header, ...rows].join("\n") + "\n");
  await page.locator("#import-file").setInputFiles(file);
  await page.locator("#import-form button[type=submit]").click();
  await page.locator("#import-report table").first().waitFor();
  const rejected = await page.locator("#import-report table").first().locator("tbody tr").allTextContents();
  check(rejected.length === 2, `the report lists the two bad rows (${rejected.length})`);
  check(rejected[0].startsWith("10") && rejected[0].includes("lat"), `row 10 is rejected for its latitude: ${rejected[0]}`);
  check(rejected[1].startsWith("20"), `row 20 is rejected: ${rejected[1]}`);
  check((await text(page, "#import-summary")).includes("nothing is written"), "nothing is written before the import");
  await shot(page, "import-report");
  await page.locator("#import-apply").click();
  await page.locator("#import-applied").waitFor();
  const applied = await text(page, "#import-applied");
  const created = Number(/(\d+) created/.exec(applied)[1]);
  check(created > 1500, `the other rows are imported: ${applied}`);
  await page.waitForFunction((n) => Number(document.querySelector("#map").dataset.fences || 0) > n, viewerFences);
  const fences = Number(await page.locator("#map").getAttribute("data-fences"));
  check(fences > viewerFences, `the map shows the imported fences (${fences} in view)`);
  await shot(page, "imported");
  const lowAfterImport = await lowContrast(page);
  check(lowAfterImport.checked > 20 && lowAfterImport.problems.length === 0, `each of the ${lowAfterImport.checked} texts on the Stores screen keeps a contrast of 4.5:1 (${lowAfterImport.problems.join("; ") || "none below"})`);

  // 3. The map: fences drawn (on a blank background: no tiles are reachable), a circle
  // drawn by clicking, the API's own validation messages.
  console.log("3. fences on the map; draw and edit with the API's validation");
  const drawn = await page.locator("#map path.leaflet-interactive").count();
  check(drawn === fences, `each fence in view is drawn (${drawn})`);
  await page.locator("#store-new").click();
  await page.locator("#store-id").fill("kiosk-rautatientori");
  await page.locator("#store-name").fill("Rautatientori kiosk");
  await page.locator("#store-category").fill("kiosk");
  await page.locator("#store-draw").click();
  await clickAt(page, 60.1710, 24.9435);
  check(Math.abs(Number(await page.locator("#store-lat").inputValue()) - 60.171) < 0.001, "a click on the map sets the circle's centre");
  await page.locator("#store-radius").fill("0");
  await page.locator("#store-form button[type=submit]").click();
  await page.locator("#store-error").waitFor({ state: "visible" });
  check((await text(page, "#store-error")).startsWith("fence.radius_m"), `a zero radius is refused naming the field: ${await text(page, "#store-error")}`);
  await shot(page, "store-error");
  await page.locator("#store-radius").fill("35");
  await page.locator("#store-form button[type=submit]").click();
  await page.locator("#store-ok").waitFor({ state: "visible" });
  check((await text(page, "#store-ok")).includes("Saved kiosk-rautatientori"), "the circle is saved");
  // A polygon whose edges cross is refused by the API, naming the geometry.
  await page.locator("input[name=shape][value=polygon]").check();
  await page.locator("#store-points").fill("24.9430, 60.1705\n24.9440, 60.1712\n24.9440, 60.1705\n24.9430, 60.1712");
  await page.locator("#store-form button[type=submit]").click();
  await page.waitForFunction(() => document.querySelector("#store-error").textContent.includes("fence.geometry"));
  check(true, `a self-crossing polygon is refused: ${await text(page, "#store-error")}`);
  await shot(page, "polygon-error");
  const kiosk = await page.evaluate(async (k) => (await fetch("/v1/admin/stores/kiosk-rautatientori", { headers: { Authorization: `Bearer ${k}` } })).json(), adminKey);
  check(kiosk.fence.type === "circle" && kiosk.fence.radius_m === 35, "the refused polygon changed nothing: the store is still the circle");

  // Zoomed out over more fences than the map draws one by one: clusters with their counts.
  // 1,200 stores more, 15 km north of the centre (a category no offer names), imported
  // through the API.
  const grid = ["id,name,category,time_zone,lat,lon,radius_m"];
  for (let i = 0; i < 1200; i++) {
    grid.push(`grid-${i},Grid ${i},test-grid,Europe/Helsinki,${(60.30 + 0.0009 * Math.floor(i / 40)).toFixed(5)},${(24.90 + 0.0018 * (i % 40)).toFixed(5)},30`);
  }
  const gridImport = await page.evaluate(async ([k, body]) => {
    const r = await fetch("/v1/admin/stores/import?format=csv", { method: "POST", headers: { Authorization: `Bearer ${k}`, "Content-Type": "text/csv" }, body });
    return { status: r.status, body: await r.json() };
  }, [adminKey, grid.join("\n") + "\n"]);
  check(gridImport.status === 200 || gridImport.status === 201, `1,200 more stores imported (${gridImport.status})`);
  await page.evaluate(() => window.nearcastConsole.map.setView([60.235, 24.93], 11));
  await page.waitForFunction(() => Number(document.querySelector("#map").dataset.clusters || 0) > 0);
  const clustered = Number(await page.locator("#map").getAttribute("data-clustered"));
  const markers = await page.locator("#map .cluster").allTextContents();
  const sum = markers.reduce((a, t) => a + Number(t), 0);
  check(clustered > 2000 && sum === clustered, `zoomed out, ${clustered} fences show as ${markers.length} clusters whose counts add up (${sum})`);
  check((await text(page, "#fence-count")).includes("clusters"), `the map says it shows clusters: ${await text(page, "#fence-count")}`);
  await shot(page, "clusters");
  // A click on the largest cluster zooms to its stores, drawn as fences again.
  const counts = markers.map(Number);
  await page.locator("#map .cluster").nth(counts.indexOf(Math.max(...counts))).click();
  await page.waitForFunction(() => Number(document.querySelector("#map").dataset.fences || 0) > 0);
  const zoomedIn = Number(await page.locator("#map").getAttribute("data-fences"));
  check(zoomedIn > 0 && zoomedIn <= 2000, `a click on a cluster zooms in to its fences (${zoomedIn} drawn)`);
  await page.evaluate(() => window.nearcastConsole.map.setView([60.1699, 24.9384], 15));
  await page.waitForFunction(() => Number(document.querySelector("#map").dataset.fences || 0) > 0);

  // 4. A campaign: rainy-day umbrellas, with a preview of the iOS and Android push.
  console.log("4. create the rainy-day umbrellas campaign and preview its push");
  await openTab(page, "campaigns");
  await page.locator("#campaign-editor summary").click();
  await page.locator("#cmp-id").fill("cmp-umbrellas");
  await page.locator("#cmp-name").fill("Rainy-day umbrellas");
  await page.locator("#cmp-holdout").fill("10");
  await page.locator("#cmp-budget").fill("200");
  await page.locator("#cmp-title-fi").fill("Sataako? {store} auttaa");
  await page.locator("#cmp-body-fi").fill("Sateenvarjot -25 % tänään koodilla {coupon}");
  await page.locator("#cmp-title-en").fill("Caught in the rain near {store}?");
  await page.locator("#cmp-body-en").fill("Umbrellas -25 % today with {coupon}");
  await page.locator("#cmp-deep-link").fill("javascript:alert(1)");
  await page.locator("#off-id").fill("off-umbrellas");
  await page.locator("#off-category").fill("umbrella");
  await page.locator("#off-store-categories").fill("cafe, supermarket");
  for (const d of ["morning", "midday", "afternoon"]) await page.locator(`input[name=daypart][value=${d}]`).check();
  await page.locator("input[name=weather][value=rain]").check();
  await page.locator("#cmp-coupons").fill(Array.from({ length: 40 }, (_, i) => `UMB-${String(i + 1).padStart(3, "0")}`).join("\n"));
  await page.locator("#campaign-form button[type=submit]").click();
  await page.locator("#campaign-error").waitFor({ state: "visible" });
  check((await text(page, "#campaign-error")).includes("variants[0].deep_link"), `a javascript: deep link is refused naming the field: ${await text(page, "#campaign-error")}`);
  await page.locator("#cmp-deep-link").fill("shop://offers/umbrellas");
  await page.locator("#campaign-form button[type=submit]").click();
  await page.locator("#campaign-ok").waitFor({ state: "visible" });
  check((await text(page, "#campaign-ok")).includes("40 codes"), `the campaign, its offer and 40 codes are saved: ${await text(page, "#campaign-ok")}`);
  check((await page.locator('#campaign-list tr[data-id="cmp-umbrellas"] .badge').textContent()) === "draft", "the new campaign is a draft");
  await page.locator("#preview-locale").selectOption("fi");
  await page.locator("#cmp-preview").click();
  await page.locator("#preview .phone").first().waitFor();
  const ios = await text(page, '#preview .phone[data-platform="ios"] .notif');
  const android = await text(page, '#preview .phone[data-platform="android"] .notif');
  check(ios.includes("Sataako?") && ios.includes("Sateenvarjot -25 %") && !ios.includes("{store}"), `the iOS preview shows the Finnish text with the store filled in: ${ios}`);
  check(android.includes("Sataako?") && android.includes("Sateenvarjot"), `the Android preview too: ${android}`);
  await page.locator("#preview").scrollIntoViewIfNeeded();
  await shot(page, "campaign-preview");

  // 5. Simulate a walk into a café on a rainy morning.
  console.log("5. simulate a walk into a store");
  const cafe = JSON.parse(fs.readFileSync(path.join(events, "stores.json"), "utf8")).find((s) => s.id === "osm-node-1378064344");
  const ring = cafe.fence.geometry ? cafe.fence.geometry.coordinates[0].slice(0, -1) : [[cafe.fence.lon, cafe.fence.lat]];
  const centre = [ring.reduce((a, p) => a + p[1], 0) / ring.length, ring.reduce((a, p) => a + p[0], 0) / ring.length];
  await openTab(page, "simulate");
  await page.evaluate(([lat, lon]) => window.nearcastConsole.map.setView([lat, lon], 18, { animate: false }), centre);
  await page.waitForTimeout(300);
  await page.locator("#sim-draw").click();
  for (const [dlat, dlon] of [[-0.0006, -0.0004], [-0.0003, -0.0002], [0, 0], [0.00001, 0.00001]]) {
    await clickAt(page, centre[0] + dlat, centre[1] + dlon);
  }
  check((await text(page, "#sim-points")) === "4 points", "four points of the walk are on the map");
  await page.locator("#sim-start").fill("2026-11-20T09:30");
  await page.locator("#sim-weather").selectOption("rain");
  await page.locator("#sim-affinities").fill("coffee=0.7");
  await page.locator("#sim-form button[type=submit]").click();
  await page.locator("#sim-summary").waitFor();
  const summary = await text(page, "#sim-summary");
  check(/4 events: 1 sent/.test(summary), `the walk sends one push: ${summary}`);
  const candidates = await page.locator("#sim-table tr.candidate").allTextContents();
  check(candidates.length >= 2, `the ranked candidates are listed (${candidates.length})`);
  const scores = await page.locator("#sim-table tr.candidates").first().locator("tr.candidate td:nth-child(4)").allTextContents();
  const scored = scores.filter((x) => x !== "–").map(Number);
  check(scored.length >= 2 && scored.every((x, i) => i === 0 || scored[i - 1] >= x) && scores.slice(0, scored.length).every((x) => x !== "–"),
    `the candidates are ranked: scored ones first, best first (${scores.slice(0, 4).join(", ")} ...)`);
  check(candidates.some((c) => c.includes("off-umbrellas") && c.includes("campaign_not_active")), "the draft campaign's offer is a candidate held back because it is not active");
  const sentRow = await page.locator("#sim-table tr.decision").evaluateAll((rows) => rows
    .map((r) => Array.from(r.cells).map((c) => c.textContent))
    .find((cells) => cells[3] === "sent"));
  check(sentRow && sentRow[2].length > 0 && sentRow[4].startsWith("off-"), `the decision that sends names its store and offer: ${sentRow && sentRow.join(" ")}`);
  await shot(page, "simulation");

  // 6. Activate, replay the demo day, read the results.
  console.log("6. activate, replay the demo day, results");
  await openTab(page, "campaigns");
  await page.locator('#campaign-list tr[data-id="cmp-umbrellas"] button', { hasText: "Activate" }).click();
  await page.waitForFunction(() => document.querySelector('#campaign-list tr[data-id="cmp-umbrellas"] .badge')?.textContent === "active");
  check(true, "the campaign is active");
  await stop(server);
  const replay = execFileSync(bin, ["replay", "--db", db, "--outbox", outbox, "--weather", path.join(events, "weather.json"), path.join(events, "demo-day.jsonl")]).toString();
  const sentLine = /sent\s+(\d+)/.exec(replay);
  check(sentLine && Number(sentLine[1]) > 0, `the demo day replays through the same file (${sentLine ? sentLine[1] : "?"} sent)`);
  // A presence message that failed every attempt an hour ago, written as the relay leaves
  // one (this server has no receiver configured, so its relay never attempts one; dead
  // letters older than 30 days are pruned): step 9 sends it again from the console.
  execFileSync("python3", ["-c", `
import json, sqlite3, sys, time
db, store = sys.argv[1], sys.argv[2]
body = json.dumps({"id": "msg_0000walk00000001", "user_id": "walk-user", "event_id": "walk-event-1",
    "at": "2026-11-20T09:00:00Z", "changes": [{"store_id": store, "transition": "enter", "since": "2026-11-20T09:00:00Z"}]})
c = sqlite3.connect(db)
c.execute("INSERT INTO webhooks (id, user_id, body, attempts, next_at, last_error, dead) VALUES (?, ?, ?, 10, ?, ?, 1)",
    ("msg_0000walk00000001", "walk-user", body, int((time.time() - 3600) * 1e6), "the receiver answered 503"))
c.commit()
`, db, cafe.id]);
  // The same address again: the browser keeps its session (per origin).
  server = await serve(new URL(server.base).host);
  await page.goto(`${server.base}/console/#results`);
  await page.locator("#app").waitFor({ state: "visible" });
  await openTab(page, "results");
  await page.locator("#results-campaign option[value=cmp-umbrellas]").waitFor({ state: "attached" });
  await page.locator("#results-campaign").selectOption("cmp-umbrellas");
  await page.locator("#results-form button[type=submit]").click();
  await page.locator("#results .result-block").first().waitFor();
  const arms = await page.locator("#results .result-block").first().locator("table.arms tbody tr").allTextContents();
  check(arms.length === 3 && arms[0].startsWith("Treated") && arms[1].startsWith("Held out"), `treated, held out and the global control are listed: ${arms.join(" | ")}`);
  const treatedN = Number(await page.locator("#results .result-block table.arms tbody tr").first().locator("td").first().textContent());
  check(treatedN > 0, `people were treated by the campaign in the demo day (${treatedN})`);
  const lifts = await page.locator("#results .result-block").first().locator("table.lifts tbody tr").allTextContents();
  check(lifts.length >= 3 && lifts[0].startsWith("Store visit") && lifts[1].startsWith("Redemption") && /too few people to conclude|significant/.test(lifts[1]),
    `visits, redemptions and purchases each have their lift and verdict: ${lifts.join(" | ")}`);
  const daily = await page.locator("#results svg.chart.daily").getAttribute("aria-label");
  check(/2026-11-20: [1-9]\d* sent/.test(daily), `the daily chart has the demo day's sends: ${daily}`);
  const funnelRows = await page.locator("#results table.funnel tbody tr").allTextContents();
  const triggered = Number(/Triggered(\d+)/.exec(funnelRows[0])[1]);
  const sent = Number(/Sent(\d+)/.exec(funnelRows.find((r) => r.startsWith("Sent")))[1]);
  check(triggered >= sent && sent === treatedN && funnelRows.some((r) => r.startsWith("Not sent:")),
    `the funnel goes from ${triggered} triggered to ${sent} sent, with the reasons in between`);
  const storeRows = await page.locator("#results-stores tbody tr").allTextContents();
  check(storeRows.length >= 1, `a row per store: ${storeRows.slice(0, 3).join(" | ")}`);
  await shot(page, "results");
  const lowAtResults = await lowContrast(page);
  check(lowAtResults.checked > 20 && lowAtResults.problems.length === 0, `and the ${lowAtResults.checked} on the Results screen, chart and tables included (${lowAtResults.problems.join("; ") || "none below"})`);
  await page.locator("#results table.funnel").scrollIntoViewIfNeeded();
  await shot(page, "results-funnel");
  // A range of days with nothing in it: zero, not an error.
  await page.locator("#results-from").fill("2026-12-01");
  await page.locator("#results-form button[type=submit]").click();
  await page.locator("#results .result-block").first().waitFor();
  check((await page.locator("#results table.arms tbody tr").first().locator("td").first().textContent()) === "0", "a range without decisions shows zero");
  await page.locator("#results-from").fill("");

  // 7. Pause; the audit log shows who did it.
  console.log("7. pause; the audit log names who did it");
  await openTab(page, "campaigns");
  await page.locator('#campaign-list tr[data-id="cmp-umbrellas"] button', { hasText: "Pause" }).click();
  await page.waitForFunction(() => document.querySelector('#campaign-list tr[data-id="cmp-umbrellas"] .badge')?.textContent === "paused");
  await openTab(page, "audit");
  await page.locator("#audit-list tbody tr").first().waitFor();
  const newest = await page.locator("#audit-list tbody tr").first().locator("td").allTextContents();
  check(newest[1] === "ada (admin)" && newest[2] === "campaign.status" && newest[3] === "cmp-umbrellas", `the newest entry: ${newest.slice(1, 4).join(" ")}`);
  await page.locator("#audit-list tbody tr").first().locator("summary").click();
  check((await text(page, "#audit-list tbody tr:first-child pre")).includes('"paused"'), "its change shows the new status");
  await shot(page, "audit");

  // 8. Why wasn't anna sent this offer?
  console.log("8. why wasn't anna sent the umbrella offer?");
  await openTab(page, "people");
  await page.locator("#why-offer option[value=off-umbrella-rain]").waitFor({ state: "attached" });
  await page.locator("#why-user").fill("anna");
  await page.locator("#why-offer").selectOption("off-umbrella-rain");
  await page.locator("#why-form button[type=submit]").click();
  await page.locator("#why-summary").waitFor();
  const why = await text(page, "#why-summary");
  check(/considered \d+ time/.test(why) && why.includes("not sent because"), `the answer says why: ${why}`);
  const whyRows = await page.locator("#why-table tbody tr").allTextContents();
  check(whyRows.length >= 1 && whyRows.some((r) => /weather|capped/.test(r)), `each decision says why: ${whyRows.join(" | ")}`);
  await shot(page, "why");
  const lowAtWhy = await lowContrast(page);
  check(lowAtWhy.checked > 10 && lowAtWhy.problems.length === 0, `and the ${lowAtWhy.checked} on the People screen (${lowAtWhy.problems.join("; ") || "none below"})`);

  // 9. A presence webhook that failed every attempt: listed, and sent again.
  console.log("9. a dead webhook message, listed and sent again");
  await openTab(page, "webhooks");
  await page.locator("#dead-list tbody tr").first().waitFor();
  const deadRow = await page.locator("#dead-list tbody tr").first().locator("td").allTextContents();
  check(deadRow[1] === "walk-user" && deadRow[2] === `entered ${cafe.name}` && deadRow[3] === "10" && deadRow[4] === "the receiver answered 503",
    `the dead letter names the person, the fence by its store's name, the attempts and the last error: ${deadRow.join(" | ")}`);
  const status = await text(page, "#webhooks-status");
  check(status.includes("off in this instance") && status.includes("One message failed every attempt"), `and says webhooks are off here: ${status}`);
  await shot(page, "webhooks");
  await page.locator("#redrive").click();
  await page.waitForFunction(() => document.querySelectorAll("#dead-list tbody tr").length === 0);
  check((await text(page, "#toast")).includes("One message is back in the outbox"), "sent again: back in the outbox, and the list is empty");
  check((await text(page, "#webhooks-status")).includes("No message failed every attempt"), "the status says none is left");
  check(await page.locator("#redrive").isHidden(), "with nothing to send again, the button is gone");
  const lowAtWebhooks = await lowContrast(page);
  check(lowAtWebhooks.problems.length === 0, `the Webhooks screen's text contrast (${lowAtWebhooks.problems.join("; ") || "none below"})`);

  check(pageErrors.length === 0, `no script errors on the page (${pageErrors.join("; ") || "none"})`);
} finally {
  await browser.close();
  await stop(server).catch(() => {});
  idpServer.close();
}
console.log(failures ? `console: ${failures} check(s) failed` : `console: every check passed; screenshots in ${path.relative(root, out)}`);
process.exit(failures ? 1 : 0);
