//! The demo and the replay: feed a JSON-lines file of events through the real pipeline
//! (SQLite store, outbox notifier, bundled model) with a clock that follows the events, and
//! print every decision as a table with a summary.

use crate::outbox::OutboxNotifier;
use crate::store::{SqliteStore, Sync};
use crate::{HostError, load_model, load_offers, load_stores, load_weather};
use nearcast_core::config::CapPolicy;
use nearcast_core::decision::{Decision, Verdict};
use nearcast_core::engine::Engine;
use nearcast_core::event::Event;
use nearcast_core::ports::{Clock, ManualClock, WeatherSource};
use nearcast_core::weather::TableWeather;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Seconds between an event happening and reaching the service in a replay.
const ARRIVAL_DELAY_S: i64 = 2;

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Events read.
    pub events: usize,
    /// Events by type.
    pub by_type: BTreeMap<String, u64>,
    /// Lines refused by validation (line number and reason).
    pub rejected: Vec<String>,
    /// Events answered "duplicate".
    pub duplicates: u64,
    /// Decisions with a verdict (candidates, or a consent/staleness suppression).
    pub decisions: Vec<Decision>,
    /// Pushes sent.
    pub sent: u64,
    /// Pushes held out.
    pub held_out: u64,
    /// Suppressions by reason code (every location event, no-trigger ones excluded).
    pub suppressed: BTreeMap<String, u64>,
    /// Location events that triggered nothing.
    pub no_trigger: u64,
    /// Decision time per location event, microseconds: p50.
    pub p50_us: f64,
    /// p99.
    pub p99_us: f64,
    /// Lines about coupon pools and redemptions at the till (the demo's own).
    pub coupons: Vec<String>,
}

/// Builds an engine on the SQLite store at `db` and the outbox at `outbox`.
///
/// # Errors
/// Files that cannot be opened, or an invalid stored configuration.
pub async fn embedded_engine(
    db: &Path,
    sync: Sync,
    outbox: &Path,
    model: Option<&Path>,
    weather: Arc<dyn WeatherSource>,
    clock: Arc<dyn Clock>,
) -> Result<(Arc<Engine>, Arc<SqliteStore>), HostError> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| HostError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let store = Arc::new(SqliteStore::open(db, sync)?);
    let notifier = OutboxNotifier::open(outbox).map_err(|source| HostError::Io {
        path: outbox.display().to_string(),
        source,
    })?;
    // Claims a process left unfinished when it died between a claim and its answer are
    // settled against the outbox before anything runs: written means sent, otherwise the
    // push goes back to pending and the relay at start sends it.
    let (settled, reopened) = store.settle_claims(|| notifier.delivery_ids())?;
    if settled + reopened > 0 {
        tracing::info!(
            settled,
            reopened,
            "unfinished delivery claims settled against the outbox"
        );
    }
    let ranker = load_model(model)?;
    let engine = Engine::new(store.clone(), Arc::new(notifier), weather, clock, ranker).await?;
    Ok((Arc::new(engine), store))
}

/// Loads stores.json, offers.json (and campaigns.json and policy.json if present) from
/// `dir` into the engine, and each campaign's coupon pool from `coupons/<campaign>.csv` if
/// present (only the codes not loaded before, so loading again adds nothing).
///
/// # Errors
/// Unreadable or invalid files; the configuration is then unchanged.
pub async fn load_config_dir(engine: &Engine, dir: &Path) -> Result<(), HostError> {
    let stores = load_stores(&dir.join("stores.json"))?;
    let offers = load_offers(&dir.join("offers.json"))?;
    let policy_path = dir.join("policy.json");
    let policy: CapPolicy = if policy_path.exists() {
        crate::parse_file(&policy_path)?
    } else {
        CapPolicy::default()
    };
    let campaigns_path = dir.join("campaigns.json");
    let campaigns: Vec<nearcast_core::campaign::Campaign> = if campaigns_path.exists() {
        crate::parse_file(&campaigns_path)?
    } else {
        Vec::new()
    };
    let ids: Vec<nearcast_core::ids::Id> = campaigns.iter().map(|c| c.id.clone()).collect();
    engine
        .load_config_with(stores, offers, campaigns, policy)
        .await?;
    for id in ids {
        let path = dir.join("coupons").join(format!("{id}.csv"));
        if !path.exists() {
            continue;
        }
        let invalid = |reason: String| HostError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let codes = match nearcast_core::coupon::parse_codes(&crate::read(&path)?)
            .map_err(|e| invalid(e.to_string()))?
        {
            Ok(codes) => codes,
            Err(rejected) => {
                let r = &rejected[0];
                return Err(invalid(format!(
                    "line {}: {} ({} bad rows)",
                    r.line,
                    r.reason,
                    rejected.len()
                )));
            }
        };
        let actor = nearcast_core::audit::Actor::system("configuration load");
        let codes = match engine.upload_coupons(&id, &codes, &actor, true).await? {
            nearcast_core::coupon::Upload::Added(_) => codes,
            nearcast_core::coupon::Upload::Existing(known) => {
                let known: HashSet<String> = known.into_iter().collect();
                codes.into_iter().filter(|c| !known.contains(c)).collect()
            }
        };
        if !codes.is_empty()
            && let nearcast_core::coupon::Upload::Existing(e) =
                engine.upload_coupons(&id, &codes, &actor, false).await?
        {
            return Err(invalid(format!("{} codes were added meanwhile", e.len())));
        }
    }
    Ok(())
}

/// Replays a JSON-lines file of events (one event per line, each with its `user_id`).
///
/// # Errors
/// An unreadable file or a store failure. Invalid lines are reported, not fatal.
pub async fn replay(
    engine: &Engine,
    clock: &ManualClock,
    file: &Path,
) -> Result<Report, HostError> {
    let f = std::fs::File::open(file).map_err(|source| HostError::Io {
        path: file.display().to_string(),
        source,
    })?;
    let mut report = Report::default();
    let mut times = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| HostError::Io {
            path: file.display().to_string(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        report.events += 1;
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                report.rejected.push(format!("line {}: body: {e}", n + 1));
                continue;
            }
        };
        if let Some(at) = v
            .get("at")
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse::<chrono::DateTime<chrono::Utc>>().ok())
        {
            clock.set(at + chrono::Duration::seconds(ARRIVAL_DELAY_S));
        }
        let event = match Event::from_json(&v, None, clock.now()) {
            Ok(e) => e,
            Err(e) => {
                report.rejected.push(format!("line {}: {e}", n + 1));
                continue;
            }
        };
        *report
            .by_type
            .entry(event.kind.type_name().to_string())
            .or_default() += 1;
        let t = Instant::now();
        let r = engine.process(&event).await?;
        let elapsed = t.elapsed();
        if r.status == "duplicate" {
            report.duplicates += 1;
            continue;
        }
        let Some(d) = r.decision else { continue };
        times.push(elapsed.as_secs_f64() * 1e6);
        match d.verdict {
            Verdict::Sent => report.sent += 1,
            Verdict::HeldOut => report.held_out += 1,
            Verdict::None => report.no_trigger += 1,
            Verdict::Suppressed => {
                let code = d.reason.as_ref().map_or("unknown", |r| r.code());
                *report.suppressed.entry(code.to_string()).or_default() += 1;
            }
        }
        if d.verdict != Verdict::None {
            report.decisions.push(d);
        }
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    report.p50_us = pct(0.50);
    report.p99_us = pct(0.99);
    Ok(report)
}

/// Writes the decisions as a table and the summary.
///
/// # Errors
/// When `out` cannot be written.
pub fn print_report(engine: &Engine, report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let catalog = engine.catalog();
    let tz = catalog
        .stores_at()
        .next()
        .map_or(chrono_tz::UTC, |(p, _)| catalog.tz(p));
    let name = |id: &Option<nearcast_core::ids::Id>| -> String {
        id.as_ref()
            .and_then(|i| catalog.store_position(i))
            .map(|p| catalog.store(p).name.clone())
            .unwrap_or_else(|| "-".into())
    };
    writeln!(
        out,
        "{:<6} {:<8} {:<26} {:<22} {:>5}  {:<10} why",
        "local", "user", "store", "offer", "score", "decision"
    )?;
    writeln!(out, "{}", "-".repeat(110))?;
    let mut shown_once: HashSet<(String, String)> = HashSet::new();
    for d in &report.decisions {
        let code = d.reason.as_ref().map_or("", |r| r.code()).to_string();
        if d.candidates.is_empty() && !shown_once.insert((d.user_id.to_string(), code.clone())) {
            continue; // the same no-candidate suppression again: counted in the summary
        }
        let local = d
            .context
            .as_ref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(&c.local_time).ok())
            .map(|t| t.format("%H:%M").to_string())
            .unwrap_or_else(|| d.at.with_timezone(&tz).format("%H:%M").to_string());
        let verdict = match d.verdict {
            Verdict::Sent => "SENT",
            Verdict::HeldOut => "HELD OUT",
            Verdict::Suppressed => "SUPPRESSED",
            Verdict::None => "-",
        };
        let why = match (&d.reason, d.candidates.is_empty()) {
            (Some(r), true) => format!("{r} (first of this kind for this user; all counted below)"),
            (Some(r), false) => r.to_string(),
            (None, _) => match &d.variant_id {
                Some(v) => format!("best of {} candidate(s); variant {v}", d.candidates.len()),
                None => format!("best of {} candidate(s)", d.candidates.len()),
            },
        };
        let mut store = name(&d.store_id);
        store.truncate(store.char_indices().nth(26).map_or(store.len(), |(i, _)| i));
        writeln!(
            out,
            "{:<6} {:<8} {:<26} {:<22} {:>5}  {:<10} {}",
            local,
            truncate(d.user_id.as_str(), 8),
            store,
            truncate(d.offer_id.as_ref().map_or("-", |o| o.as_str()), 22),
            d.score.map_or("-".into(), |s| format!("{s:.2}")),
            verdict,
            why
        )?;
    }
    if !catalog.campaigns.is_empty() {
        writeln!(out)?;
        writeln!(out, "Campaigns")?;
        for c in catalog.campaigns.iter() {
            let mine = |v: Option<&nearcast_core::ids::Id>, verdict: Verdict| {
                report
                    .decisions
                    .iter()
                    .filter(|d| d.campaign_id.as_ref() == Some(&c.id) && d.verdict == verdict)
                    .filter(|d| v.is_none() || d.variant_id.as_ref() == v)
                    .count()
            };
            let sent = mine(None, Verdict::Sent);
            writeln!(
                out,
                "  {} ({}): {} sent of a budget of {}, {} held out ({:.0} % holdout)",
                c.id,
                c.status.as_str(),
                sent,
                c.budget.map_or("unlimited".into(), |b| b.to_string()),
                mine(None, Verdict::HeldOut),
                c.holdout * 100.0
            )?;
            for v in &c.variants {
                writeln!(
                    out,
                    "    variant {:<12} {} sent, {} held out ({})",
                    v.id.as_str(),
                    mine(Some(&v.id), Verdict::Sent),
                    mine(Some(&v.id), Verdict::HeldOut),
                    v.content.keys().cloned().collect::<Vec<_>>().join("/")
                )?;
            }
        }
    }
    for l in &report.coupons {
        writeln!(out, "{l}")?;
    }
    writeln!(out)?;
    writeln!(out, "Summary")?;
    let types: Vec<String> = report
        .by_type
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    writeln!(
        out,
        "  events          {} ({})",
        report.events,
        types.join(", ")
    )?;
    writeln!(out, "  rejected        {}", report.rejected.len())?;
    writeln!(out, "  duplicates      {}", report.duplicates)?;
    writeln!(out, "  pushes sent     {}", report.sent)?;
    writeln!(out, "  held out        {}", report.held_out)?;
    writeln!(
        out,
        "  no trigger      {} location events",
        report.no_trigger
    )?;
    writeln!(
        out,
        "  suppressed      {}",
        report.suppressed.values().sum::<u64>()
    )?;
    for (k, v) in &report.suppressed {
        writeln!(out, "    {k:<28} {v}")?;
    }
    writeln!(
        out,
        "  decision time   p50 {:.1} µs, p99 {:.1} µs (per location event, store included)",
        report.p50_us, report.p99_us
    )?;
    for r in report.rejected.iter().take(10) {
        writeln!(out, "  rejected: {r}")?;
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Folder with stores.json, offers.json, weather.json and demo-day.jsonl.
    pub data: PathBuf,
    /// Working folder for the database and the outbox (emptied first).
    pub work: PathBuf,
    /// Model artifact (bundled one if `None`).
    pub model: Option<PathBuf>,
}

/// Each defined campaign's results as `GET /v1/admin/campaigns/{id}/results` gives them
/// (from the cells the commits kept): per arm the exposures and what followed, and the
/// lift on visits, redemptions and purchases with its 95 % interval and verdict.
///
/// # Errors
/// The store's, or writing to `out`.
pub async fn print_campaign_results(
    engine: &Engine,
    out: &mut impl Write,
) -> Result<(), HostError> {
    use nearcast_core::campaign_results::{Lift, summarise, window_of};
    let io = |source| HostError::Io {
        path: "stdout".into(),
        source,
    };
    let pct = |x: f64| format!("{:.1} %", 100.0 * x);
    let lift = |l: &Lift| match l.difference {
        Some(d) => format!(
            "{} against {}: {:+.1} points, 95 % interval [{:+.1}, {:+.1}], {}",
            l.treated_rate.map_or("-".into(), pct),
            l.held_out_rate.map_or("-".into(), pct),
            100.0 * d.difference,
            100.0 * d.low,
            100.0 * d.high,
            l.verdict.replace('_', " ")
        ),
        None => format!("no comparison yet ({})", l.verdict.replace('_', " ")),
    };
    let catalog = engine.catalog();
    for c in catalog.campaigns.iter() {
        let cells = engine
            .store()
            .campaign_cells(
                &c.id,
                nearcast_core::campaign_results::CellLevel::Days,
                None,
                None,
            )
            .await
            .map_err(|e| HostError::Invalid {
                path: format!("campaign {}", c.id),
                reason: e.to_string(),
            })?;
        let r = summarise(&cells, None, None, None);
        let (t, h) = (&r.all.treated, &r.all.held_out);
        writeln!(
            out,
            "\ncampaign {} ({}), within {} h of each decision:",
            c.name,
            c.id,
            window_of(c).num_hours()
        )
        .map_err(io)?;
        writeln!(
            out,
            "  triggered {}, eligible {}, sent {}, held out {}; treated: {} opened, {} visited, {} redeemed, {} purchased; held out: {} visited, {} redeemed, {} purchased",
            r.funnel.triggered, r.funnel.eligible, t.n, h.n + r.all.global_control.n,
            t.opened, t.visited, t.redeemed, t.purchased, h.visited, h.redeemed, h.purchased
        )
        .map_err(io)?;
        writeln!(out, "  visits       {}", lift(&r.all.visit_lift)).map_err(io)?;
        writeln!(out, "  redemptions  {}", lift(&r.all.redemption_lift)).map_err(io)?;
        writeln!(out, "  purchases    {}", lift(&r.all.purchase_lift)).map_err(io)?;
    }
    Ok(())
}

/// Runs the demo from scratch: fresh database, the sample configuration, a day of events.
///
/// # Errors
/// Missing or invalid demo files, or a store failure.
pub async fn run_demo(opts: &DemoOptions) -> Result<(Arc<Engine>, Report, PathBuf), HostError> {
    for f in [
        "nearcast.db",
        "nearcast.db-wal",
        "nearcast.db-shm",
        "outbox.jsonl",
    ] {
        let _ = std::fs::remove_file(opts.work.join(f));
    }
    let weather: TableWeather = load_weather(&opts.data.join("weather.json"))?;
    let clock = ManualClock::new(chrono::Utc::now());
    let outbox = opts.work.join("outbox.jsonl");
    let (engine, _) = embedded_engine(
        &opts.work.join("nearcast.db"),
        Sync::Normal,
        &outbox,
        opts.model.as_deref(),
        Arc::new(weather),
        Arc::new(clock.clone()),
    )
    .await?;
    load_config_dir(&engine, &opts.data).await?;
    let mut report = replay(&engine, &clock, &opts.data.join("demo-day.jsonl")).await?;
    report.coupons = till(&engine).await?;
    Ok((engine, report, outbox))
}

/// Each coupon pool's counts, and a till redeeming the first code sent (the earliest push,
/// whatever order the store lists deliveries in): once (the outcome is logged against the
/// delivery), then again (refused). Part of the demo; public so the same day can be
/// replayed on another store and compared.
///
/// # Errors
/// A store failure.
pub async fn till(engine: &Engine) -> Result<Vec<String>, HostError> {
    use nearcast_core::coupon::Redemption;
    let mut lines = Vec::new();
    for c in engine.catalog().campaigns.iter().filter(|c| c.coupon_pool) {
        let first = lines.len();
        let sent = engine
            .store()
            .deliveries()
            .await
            .map_err(nearcast_core::engine::EngineError::from)?;
        if let Some(code) = sent
            .iter()
            .filter(|d| d.push.campaign_id == c.id && d.push.coupon.is_some())
            .min_by_key(|d| (d.push.at, d.push.delivery_id.clone()))
            .and_then(|d| d.push.coupon.clone())
        {
            for (order, attempt) in [("till-1", "first"), ("till-2", "again")] {
                let r = engine.redeem_coupon(&code, Some(order)).await?;
                let what = match r {
                    Redemption::Redeemed { delivery_id, .. } => format!(
                        "redeemed (delivery {})",
                        delivery_id.as_deref().unwrap_or("-")
                    ),
                    Redemption::AlreadyRedeemed { order_id, .. } => format!(
                        "refused: already redeemed for order {}",
                        order_id.as_deref().unwrap_or("-")
                    ),
                    other => format!("{other:?}"),
                };
                lines.push(format!("    till redeems {code} ({attempt}): {what}"));
            }
        }
        let n = engine.coupon_counts(&c.id).await?;
        lines.insert(
            first,
            format!(
                "  {} coupons: {} codes, {} given out (each once), {} redeemed",
                c.id, n.total, n.issued, n.redeemed
            ),
        );
    }
    Ok(lines)
}
