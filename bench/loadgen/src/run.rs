//! `run`: drives `POST /v1/events` from N keep-alive connections and reports throughput
//! and per-request latency.
//!
//! 1. `GET /healthz` (prints the stores/offers the server holds).
//! 2. Warm-up, not measured: one batch per user granting location and push consent and
//!    registering a (fake) FCM push token, so location events run the whole decision path
//!    and pushes reach the outbox.
//! 3. Load: every connection loops (pick a user, build the next `batch` location fixes of
//!    that user's walk, POST, check every result is `accepted`) until the duration is over
//!    or `max_events` have been reserved, whichever comes first.
//!
//! Each user walks as a phone reports (see [`Walker`]): a fix every `fix_interval`
//! seconds of event time, 1.4 m/s with a wandering heading, stops of 20 s to 2 min (at a
//! shop front or inside), GPS noise of the reported accuracy and a rare outlier hundreds
//! of metres off. Fixes therefore enter, dwell in and leave fences as real ones do, and
//! reach candidates and sends. Event time starts 10 minutes before the wall clock and
//! moves on by the fix interval: users report faster than real time, so in long runs
//! their clocks run ahead of the wall clock (the server accepts fixes up to 24 h ahead;
//! caps count in its own clock). `--scatter` restores the old pattern (every fix at a
//! uniformly random point of the box, a batch stamped at one instant), which no phone
//! produces and the speed gate refuses after its first fix.

use crate::config::uniform_point;
use crate::http::Conn;
use crate::rng::Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Run parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// `host:port`.
    pub addr: String,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Distinct users.
    pub users: usize,
    /// Events per request (1..=100).
    pub batch: usize,
    /// Time bound of the measured phase.
    pub duration: Duration,
    /// Event bound of the measured phase.
    pub max_events: u64,
    /// User id prefix.
    pub user_prefix: String,
    /// Skip the consent/push-token warm-up.
    pub no_warmup: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Seed of the points and user picks (event ids are unique per run regardless).
    pub seed: u64,
    /// Server process to sample CPU time and memory of (Linux /proc).
    pub server_pid: Option<u32>,
    /// Let connections pick any user (concurrent batches of one user may race).
    pub shared_users: bool,
    /// Seconds of event time between two fixes of a walk.
    pub fix_interval: f64,
    /// Every fix at a uniformly random point, a batch at one instant (the old pattern).
    pub scatter: bool,
}

/// One user's walk, kept by the connection that posts for the user.
#[derive(Debug, Clone)]
pub struct Walker {
    lat: f64,
    lon: f64,
    heading: f64,
    at: chrono::DateTime<chrono::Utc>,
    stop_left: u32,
}

/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_195.08;

impl Walker {
    /// A walker at a random point of the box, 10 minutes ago.
    pub fn new(rng: &mut Rng) -> Self {
        let (lat, lon) = uniform_point(rng);
        Walker {
            lat,
            lon,
            heading: rng.range(0.0, std::f64::consts::TAU),
            at: chrono::Utc::now() - chrono::Duration::minutes(10),
            stop_left: 0,
        }
    }

    /// The next fix: (lat, lon, accuracy_m, at).
    pub fn step(
        &mut self,
        rng: &mut Rng,
        interval_s: f64,
    ) -> (f64, f64, f64, chrono::DateTime<chrono::Utc>) {
        // A user silent for long resumes in the recent past, never later than it stopped.
        let floor = chrono::Utc::now() - chrono::Duration::minutes(10);
        if self.at < floor {
            self.at = floor;
        }
        self.at += chrono::Duration::milliseconds((interval_s * 1000.0) as i64);
        if self.stop_left > 0 {
            self.stop_left -= 1;
        } else {
            self.heading += 0.35 * rng.gauss();
            let d = 1.4 * interval_s;
            let (n, e) = (d * self.heading.cos(), d * self.heading.sin());
            let lat = self.lat + n / M_PER_DEG;
            let lon = self.lon + e / (M_PER_DEG * self.lat.to_radians().cos());
            if crate::config::LAT.0 < lat
                && lat < crate::config::LAT.1
                && crate::config::LON.0 < lon
                && lon < crate::config::LON.1
            {
                (self.lat, self.lon) = (lat, lon);
            } else {
                self.heading += std::f64::consts::PI;
            }
            if rng.chance(0.02) {
                self.stop_left = ((rng.range(20.0, 120.0)) / interval_s) as u32;
            }
        }
        let acc = rng.range(4.0, 25.0);
        let (mut dn, mut de) = (0.5 * acc * rng.gauss(), 0.5 * acc * rng.gauss());
        if rng.chance(0.005) {
            // An outlier of the kind phones produce in street canyons.
            let (r, a) = (
                rng.range(200.0, 800.0),
                rng.range(0.0, std::f64::consts::TAU),
            );
            (dn, de) = (r * a.cos(), r * a.sin());
        }
        (
            self.lat + dn / M_PER_DEG,
            self.lon + de / (M_PER_DEG * self.lat.to_radians().cos()),
            acc,
            self.at,
        )
    }
}

/// Per-connection tallies.
#[derive(Default)]
struct Tally {
    requests: u64,
    events: u64,
    http_errors: u64,
    result_errors: u64,
    io_errors: u64,
    lat_us: Vec<u32>,
    verdicts: BTreeMap<String, u64>,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.requests += o.requests;
        self.events += o.events;
        self.http_errors += o.http_errors;
        self.result_errors += o.result_errors;
        self.io_errors += o.io_errors;
        self.lat_us.extend(o.lat_us);
        for (k, v) in o.verdicts {
            *self.verdicts.entry(k).or_default() += v;
        }
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn errors(&self) -> u64 {
        self.http_errors + self.result_errors + self.io_errors
    }

    fn note(&mut self, e: String) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

/// A unique id for this run: event ids embed it so reruns never collide.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("r{:x}{:x}", nanos as u64, std::process::id())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat (USER_HZ = 100).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime field 14, stime field 15 (1-based).
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / 100.0)
}

/// Machine-wide CPU seconds from /proc/stat: (busy, iowait, stolen), all cores summed.
/// Busy excludes the time the hypervisor gave to other guests (steal), which a shared
/// virtual machine can lose in large amounts: the cores were not ours to use then.
pub fn machine_cpu_seconds() -> Option<(f64, f64, f64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: f64 = f.iter().take(8).sum();
    let idle = *f.get(3)?;
    let iowait = *f.get(4)?;
    let steal = f.get(7).copied().unwrap_or(0.0);
    Some((
        (total - idle - iowait - steal) / 100.0,
        iowait / 100.0,
        steal / 100.0,
    ))
}

/// Bytes a process wrote: (to storage, through write calls), from /proc/PID/io.
pub fn io_bytes(pid: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((get("write_bytes:")?, get("wchar:")?))
}

/// VmRSS and VmHWM in KiB, from /proc/PID/status.
pub fn memory_kib(pid: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((get("VmRSS:")?, get("VmHWM:")?))
}

/// Checks a 200 answer: as many results as events, each `accepted`; counts the decisions'
/// verdicts.
fn check_results(
    body: &[u8],
    n: usize,
    verdicts: &mut BTreeMap<String, u64>,
) -> Result<(), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not JSON: {e}"))?;
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or("response has no results array")?;
    if results.len() != n {
        return Err(format!("{} results for {n} events", results.len()));
    }
    let mut bad = None;
    for r in results {
        match r.get("status").and_then(Value::as_str) {
            Some("accepted") => {}
            other => bad = bad.or(Some(format!("result status {other:?}"))),
        }
        if let Some(verdict) = r
            .get("decision")
            .and_then(|d| d.get("verdict"))
            .and_then(Value::as_str)
        {
            *verdicts.entry(verdict.to_string()).or_default() += 1;
        }
    }
    bad.map_or(Ok(()), Err)
}

async fn post(
    conn: &mut Option<Conn>,
    addr: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<crate::http::Response, String> {
    if conn.as_ref().is_none_or(|c| c.closed) {
        *conn = Some(
            tokio::time::timeout(timeout, Conn::connect(addr))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| format!("connect: {e}"))?,
        );
    }
    let c = conn.as_mut().expect("connected");
    match tokio::time::timeout(timeout, c.request("POST", path, Some(body))).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            *conn = None;
            Err(format!("request: {e}"))
        }
        Err(_) => {
            *conn = None;
            Err(format!("request timed out after {timeout:?}"))
        }
    }
}

fn user_id(p: &Params, u: usize) -> String {
    format!("{}{u}", p.user_prefix)
}

async fn health(p: &Params) -> Result<Value, String> {
    let mut c = tokio::time::timeout(p.timeout, Conn::connect(&p.addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("cannot connect to {}: {e}", p.addr))?;
    let r = tokio::time::timeout(p.timeout, c.request("GET", "/healthz", None))
        .await
        .map_err(|_| "GET /healthz timed out".to_string())?
        .map_err(|e| format!("GET /healthz: {e}"))?;
    if r.status != 200 {
        return Err(format!("GET /healthz answered {}", r.status));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("GET /healthz: {e}"))
}

/// Warm-up: consents and a push token for every user, spread over a few connections.
async fn warmup(p: Arc<Params>, run: Arc<String>) -> Tally {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..p.connections.clamp(1, 16) {
        let (p, run, next) = (p.clone(), run.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut conn = None;
            loop {
                let u = next.fetch_add(1, Ordering::Relaxed) as usize;
                if u >= p.users {
                    break;
                }
                let at = now_rfc3339();
                let body = json!({"user_id": user_id(&p, u), "events": [
                    {"event_id": format!("{run}-w{w}-{u}-cl"), "type": "consent", "at": at, "purpose": "location", "granted": true},
                    {"event_id": format!("{run}-w{w}-{u}-cp"), "type": "consent", "at": at, "purpose": "push", "granted": true},
                    {"event_id": format!("{run}-w{w}-{u}-pt"), "type": "push_token", "at": at, "platform": "fcm",
                     "token": format!("fake-fcm-token-{u:08}")},
                ]});
                let body = serde_json::to_vec(&body).expect("json");
                t.requests += 1;
                match post(&mut conn, &p.addr, "/v1/events", &body, p.timeout).await {
                    Ok(r) if r.status == 200 => match check_results(&r.body, 3, &mut t.verdicts) {
                        Ok(()) => t.events += 3,
                        Err(e) => {
                            t.result_errors += 1;
                            t.note(e);
                        }
                    },
                    Ok(r) => {
                        t.http_errors += 1;
                        t.note(format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)));
                    }
                    Err(e) => {
                        t.io_errors += 1;
                        t.note(e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        all.merge(t.await.expect("warm-up task"));
    }
    all
}

/// The user of a connection's next batch. By default connection `c` of `C` only uses
/// users `u` with `u % C == c`, so no two requests for one user are in flight at once (a
/// device posts its batches one after the other); `shared_users` lifts that.
fn pick_user(p: &Params, rng: &mut Rng, conn: usize) -> usize {
    let c = p.connections;
    if p.shared_users || p.users < c {
        return rng.below(p.users);
    }
    let mine = (p.users - conn).div_ceil(c);
    conn + c * rng.below(mine)
}

fn location_batch(
    p: &Params,
    rng: &mut Rng,
    walkers: &mut HashMap<usize, Walker>,
    run: &str,
    conn: usize,
    seq: u64,
    n: usize,
) -> Vec<u8> {
    let u = pick_user(p, rng, conn);
    let now = now_rfc3339();
    let mut s = String::with_capacity(64 + n * 150);
    let _ = write!(s, r#"{{"user_id":"{}","events":["#, user_id(p, u));
    for i in 0..n {
        let (lat, lon, acc, at) = if p.scatter {
            let (lat, lon) = uniform_point(rng);
            (lat, lon, 10.0, None)
        } else {
            let w = walkers.entry(u).or_insert_with(|| Walker::new(rng));
            let (lat, lon, acc, at) = w.step(rng, p.fix_interval);
            (lat, lon, acc, Some(at))
        };
        let at = at.map_or_else(
            || now.clone(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"event_id":"{run}-{conn:x}-{seq:x}-{i}","type":"location","at":"{at}","lat":{lat:.6},"lon":{lon:.6},"accuracy_m":{acc:.1}}}"#
        );
    }
    s.push_str("]}");
    s.into_bytes()
}

async fn load_conn(
    p: Arc<Params>,
    run: Arc<String>,
    ci: usize,
    reserved: Arc<AtomicU64>,
    deadline: Instant,
) -> Tally {
    let mut t = Tally {
        lat_us: Vec::with_capacity(1 << 14),
        ..Tally::default()
    };
    let mut rng = Rng::new(p.seed.wrapping_mul(0x9E37_79B9).wrapping_add(ci as u64));
    let mut conn = None;
    let mut seq = 0u64;
    let mut consecutive_io = 0;
    let mut walkers = HashMap::new();
    while Instant::now() < deadline {
        let start = reserved.fetch_add(p.batch as u64, Ordering::Relaxed);
        if start >= p.max_events {
            break;
        }
        let n = (p.max_events - start).min(p.batch as u64) as usize;
        seq += 1;
        let body = location_batch(&p, &mut rng, &mut walkers, &run, ci, seq, n);
        let t0 = Instant::now();
        let r = post(&mut conn, &p.addr, "/v1/events", &body, p.timeout).await;
        let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        t.requests += 1;
        match r {
            Ok(r) if r.status == 200 => {
                consecutive_io = 0;
                t.lat_us.push(us);
                match check_results(&r.body, n, &mut t.verdicts) {
                    Ok(()) => t.events += n as u64,
                    Err(e) => {
                        t.result_errors += 1;
                        t.note(e);
                    }
                }
            }
            Ok(r) => {
                consecutive_io = 0;
                t.lat_us.push(us);
                t.http_errors += 1;
                let body = String::from_utf8_lossy(&r.body);
                t.note(format!(
                    "HTTP {}: {}",
                    r.status,
                    body.chars().take(300).collect::<String>()
                ));
            }
            Err(e) => {
                t.io_errors += 1;
                t.note(e);
                consecutive_io += 1;
                if consecutive_io >= 20 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    t
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs the warm-up and the load; prints the report (human table on stdout, or on stderr
/// with the JSON line on stdout when `json`). Returns whether there were no errors.
///
/// # Errors
/// When the server cannot be reached at all.
pub async fn run(p: Params, as_json: bool) -> Result<bool, String> {
    let p = Arc::new(p);
    let run = Arc::new(run_id());
    let h = health(&p).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "server {}: {} stores, {} offers, model {}",
        p.addr, h["stores"], h["offers"], h["model"]
    );

    let mut warm = None;
    if !p.no_warmup {
        let t0 = Instant::now();
        let w = warmup(p.clone(), run.clone()).await;
        let secs = t0.elapsed().as_secs_f64();
        let _ = writeln!(
            out,
            "warm-up: {} users, {} events in {:.2} s ({:.0} events/s), {} errors",
            p.users,
            w.events,
            secs,
            w.events as f64 / secs,
            w.errors()
        );
        if let Some(e) = &w.first_error {
            let _ = writeln!(out, "  first warm-up error: {e}");
        }
        warm = Some((w.errors(), secs));
    }

    let server = p.server_pid.map(|x| x.to_string());
    let server_cpu0 = server.as_deref().and_then(cpu_seconds);
    let server_io0 = server.as_deref().and_then(io_bytes);
    let client_cpu0 = cpu_seconds("self");
    let machine0 = machine_cpu_seconds();
    let reserved = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + p.duration;
    let mut tasks = Vec::with_capacity(p.connections);
    for ci in 0..p.connections {
        tasks.push(tokio::spawn(load_conn(
            p.clone(),
            run.clone(),
            ci,
            reserved.clone(),
            deadline,
        )));
    }
    let mut t = Tally::default();
    for task in tasks {
        t.merge(task.await.map_err(|e| format!("load task: {e}"))?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let client_cpu = client_cpu0.zip(cpu_seconds("self")).map(|(a, b)| b - a);
    let server_cpu = server_cpu0
        .zip(server.as_deref().and_then(cpu_seconds))
        .map(|(a, b)| b - a);
    let server_mem = server.as_deref().and_then(memory_kib);
    let server_io = server_io0
        .zip(server.as_deref().and_then(io_bytes))
        .map(|(a, b)| (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1)));
    let machine = machine0
        .zip(machine_cpu_seconds())
        .map(|(a, b)| (b.0 - a.0, b.1 - a.1, b.2 - a.2));

    t.lat_us.sort_unstable();
    let lat = &t.lat_us;
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&x| f64::from(x)).sum::<f64>() / lat.len() as f64 / 1000.0
    };
    let (p50, p90, p99, max) = (
        percentile(lat, 0.50),
        percentile(lat, 0.90),
        percentile(lat, 0.99),
        percentile(lat, 1.0),
    );
    let eps = t.events as f64 / elapsed;
    let rps = t.requests as f64 / elapsed;

    let _ = writeln!(
        out,
        "load: {} connections, {} users, batch {}, {:.1} s",
        p.connections, p.users, p.batch, elapsed
    );
    let _ = writeln!(out, "  {:<22}{:>12}", "requests", t.requests);
    let _ = writeln!(out, "  {:<22}{:>12}", "events accepted", t.events);
    let _ = writeln!(out, "  {:<22}{:>12.0}", "events/s", eps);
    let _ = writeln!(out, "  {:<22}{:>12.1}", "requests/s", rps);
    let _ = writeln!(out, "  {:<22}{:>12.2}", "latency p50 ms", p50);
    let _ = writeln!(out, "  {:<22}{:>12.2}", "latency p90 ms", p90);
    let _ = writeln!(out, "  {:<22}{:>12.2}", "latency p99 ms", p99);
    let _ = writeln!(out, "  {:<22}{:>12.2}", "latency max ms", max);
    let _ = writeln!(out, "  {:<22}{:>12.2}", "latency mean ms", mean);
    let _ = writeln!(
        out,
        "  {:<22}{:>12}   (http {}, results {}, io {})",
        "errors",
        t.errors(),
        t.http_errors,
        t.result_errors,
        t.io_errors
    );
    let verdicts: Vec<String> = t.verdicts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "  {:<22}{}", "verdicts", verdicts.join(", "));
    if let Some(c) = client_cpu {
        let _ = writeln!(
            out,
            "  {:<22}{:>12.2}   ({:.1} us/event)",
            "driver cpu s",
            c,
            c * 1e6 / t.events.max(1) as f64
        );
    }
    if let Some(c) = server_cpu {
        let _ = writeln!(
            out,
            "  {:<22}{:>12.2}   ({:.1} us/event, {:.2} cores)",
            "server cpu s",
            c,
            c * 1e6 / t.events.max(1) as f64,
            c / elapsed
        );
    }
    if let Some((busy, iowait, steal)) = machine {
        let others = busy - server_cpu.unwrap_or(0.0) - client_cpu.unwrap_or(0.0);
        let _ = writeln!(
            out,
            "  {:<22}{:>12.2}   (iowait {:.2}; stolen by the host {:.2}; other processes ~{:.2}{})",
            "machine busy cores",
            busy / elapsed,
            iowait / elapsed,
            steal / elapsed,
            others / elapsed,
            if server_cpu.is_none() {
                ", incl. the server"
            } else {
                ""
            }
        );
    }
    if let Some((disk, wchar)) = server_io {
        let ev = t.events.max(1) as f64;
        let _ = writeln!(
            out,
            "  {:<22}{:>12.1}   ({:.1} KiB/event written by write calls; {:.0} MiB/s to storage)",
            "server disk KiB/event",
            disk as f64 / 1024.0 / ev,
            wchar as f64 / 1024.0 / ev,
            disk as f64 / 1048576.0 / elapsed
        );
    }
    if let Some((rss, hwm)) = server_mem {
        let _ = writeln!(
            out,
            "  {:<22}{:>12}   (VmHWM {} KiB)",
            "server VmRSS KiB", rss, hwm
        );
    }
    if let Some(e) = &t.first_error {
        let _ = writeln!(out, "  first error: {e}");
    }

    let ok = t.errors() == 0 && warm.is_none_or(|(e, _)| e == 0);
    if as_json {
        eprint!("{out}");
        let mut j = json!({
            "addr": p.addr, "connections": p.connections, "users": p.users, "batch": p.batch,
            "elapsed_s": r2(elapsed), "requests": t.requests, "events": t.events, "errors": t.errors(),
            "http_errors": t.http_errors, "result_errors": t.result_errors, "io_errors": t.io_errors,
            "events_per_s": r2(eps), "requests_per_s": r2(rps),
            "p50_ms": r2(p50), "p90_ms": r2(p90), "p99_ms": r2(p99), "max_ms": r2(max), "mean_ms": r2(mean),
            "stores": h["stores"], "offers": h["offers"],
        });
        let o = j.as_object_mut().expect("object");
        if let Some((e, s)) = warm {
            o.insert("warmup_errors".into(), json!(e));
            o.insert("warmup_s".into(), json!(r2(s)));
        }
        for (k, v) in &t.verdicts {
            o.insert(format!("verdict_{k}"), json!(v));
        }
        if let Some(c) = client_cpu {
            o.insert("driver_cpu_s".into(), json!(r2(c)));
        }
        if let Some(c) = server_cpu {
            o.insert("server_cpu_s".into(), json!(r2(c)));
            o.insert("server_cores".into(), json!(r2(c / elapsed)));
            o.insert(
                "server_cpu_us_per_event".into(),
                json!(r2(c * 1e6 / t.events.max(1) as f64)),
            );
        }
        if let Some((busy, iowait, steal)) = machine {
            o.insert("machine_busy_cores".into(), json!(r2(busy / elapsed)));
            o.insert("machine_iowait_cores".into(), json!(r2(iowait / elapsed)));
            o.insert("stolen_cores".into(), json!(r2(steal / elapsed)));
            if let Some(c) = server_cpu {
                let others = busy - c - client_cpu.unwrap_or(0.0);
                o.insert("other_busy_cores".into(), json!(r2(others / elapsed)));
            }
        }
        if let Some((disk, wchar)) = server_io {
            let ev = t.events.max(1) as f64;
            o.insert(
                "server_disk_kib_per_event".into(),
                json!(r2(disk as f64 / 1024.0 / ev)),
            );
            o.insert(
                "server_wchar_kib_per_event".into(),
                json!(r2(wchar as f64 / 1024.0 / ev)),
            );
        }
        if let Some((rss, hwm)) = server_mem {
            o.insert("server_vmrss_kib".into(), json!(rss));
            o.insert("server_vmhwm_kib".into(), json!(hwm));
        }
        println!("{j}");
    } else {
        print!("{out}");
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_valid_json_with_unique_ids() {
        let p = Params {
            addr: "127.0.0.1:1".into(),
            connections: 1,
            users: 10,
            batch: 50,
            duration: Duration::from_secs(1),
            max_events: 100,
            user_prefix: "u".into(),
            no_warmup: true,
            timeout: Duration::from_secs(1),
            seed: 1,
            server_pid: None,
            shared_users: false,
            fix_interval: 2.0,
            scatter: false,
        };
        let mut rng = Rng::new(1);
        let mut walkers = HashMap::new();
        let b = location_batch(&p, &mut rng, &mut walkers, "rtest", 3, 7, 50);
        let v: Value = serde_json::from_slice(&b).unwrap();
        let evs = v["events"].as_array().unwrap();
        assert_eq!(evs.len(), 50);
        let ids: std::collections::HashSet<&str> = evs
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 50);
        assert!(evs.iter().all(|e| e["at"].as_str().unwrap().ends_with('Z')));
        // The walk: one user, fixes 2 s apart in event time.
        let at = |e: &Value| {
            chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        };
        assert!(evs.windows(2).all(|w| at(&w[1]) - at(&w[0]) == 2000));
        assert_eq!(walkers.len(), 1);
    }

    #[test]
    fn walkers_walk_stop_and_stay_in_the_box() {
        let mut rng = Rng::new(9);
        let mut w = Walker::new(&mut rng);
        let (mut far, mut still, n) = (0, 0, 20_000);
        let mut prev = (w.lat, w.lon);
        for _ in 0..n {
            let (lat, lon, acc, _) = w.step(&mut rng, 2.0);
            assert!((4.0..25.0).contains(&acc));
            // The walker itself moves 2.8 m per fix at most, inside the box.
            let moved = ((w.lat - prev.0) * M_PER_DEG)
                .hypot((w.lon - prev.1) * M_PER_DEG * w.lat.to_radians().cos());
            assert!(moved < 2.81, "{moved}");
            assert!(crate::config::LAT.0 < w.lat && w.lat < crate::config::LAT.1);
            assert!(crate::config::LON.0 < w.lon && w.lon < crate::config::LON.1);
            if moved == 0.0 {
                still += 1;
            }
            prev = (w.lat, w.lon);
            // The fix is near the walker, but for the rare outlier.
            let off = ((lat - w.lat) * M_PER_DEG)
                .hypot((lon - w.lon) * M_PER_DEG * w.lat.to_radians().cos());
            if off > 150.0 {
                far += 1;
            }
        }
        // About one fix in 200 is an outlier; people stop now and then.
        assert!((n / 400..n / 100).contains(&far), "{far}");
        assert!(still > n / 10, "{still}");
    }

    #[test]
    fn connections_use_disjoint_users() {
        let mut p = Params {
            addr: String::new(),
            connections: 7,
            users: 100,
            batch: 1,
            duration: Duration::from_secs(1),
            max_events: 1,
            user_prefix: "u".into(),
            no_warmup: true,
            timeout: Duration::from_secs(1),
            seed: 1,
            server_pid: None,
            shared_users: false,
            fix_interval: 2.0,
            scatter: false,
        };
        let mut rng = Rng::new(3);
        let mut seen = std::collections::HashSet::new();
        for c in 0..7 {
            for _ in 0..2000 {
                let u = pick_user(&p, &mut rng, c);
                assert!(u < 100 && u % 7 == c);
                seen.insert(u);
            }
        }
        assert_eq!(seen.len(), 100);
        p.shared_users = true;
        assert!((0..200).any(|_| !pick_user(&p, &mut rng, 0).is_multiple_of(7)));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
    }

    #[test]
    fn results_must_all_be_accepted() {
        let mut v = BTreeMap::new();
        let ok = br#"{"results":[{"status":"accepted","decision":{"verdict":"none"}},{"status":"accepted"}]}"#;
        assert!(check_results(ok, 2, &mut v).is_ok());
        assert_eq!(v["none"], 1);
        let dup = br#"{"results":[{"status":"accepted"},{"status":"duplicate"}]}"#;
        assert!(check_results(dup, 2, &mut v).is_err());
        assert!(check_results(ok, 3, &mut v).is_err());
    }
}
