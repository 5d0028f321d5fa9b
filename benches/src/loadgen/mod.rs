//! loadgen: an end-to-end load generator that drives a bluelight server
//! like a national network would and writes what it saw.
//!
//! One run: start (or find) the server, load the fences, register the
//! fleet, open the subscribers, then for `seconds` send the fleet's fixes in
//! real time while the subscribers and the nearest clients measure; drain;
//! compare every alert received with the alerts owed and every sampled
//! nearest answer with brute force; read the server's counters and
//! `/proc`; then, with `--target redis-geo URL`, the same fleet and nearest
//! workload against Redis; and write the report.
//!
//! ## Layout
//!
//! * [`plan`] — flags, presets, the resolved plan.
//! * [`world`] — fleet, fences, the truth, the alerts owed, the sender.
//! * [`clients`] — WebSocket clients: alerts, positions, nearest.
//! * [`export`] — `--export-at`: an analyst's export in the middle of it.
//! * [`soak`] — `--churn`: fences, feeds and sessions that come and go,
//!   and the server's memory each minute.
//! * [`journal`] — `--redis`: the server journals to a redis-server of
//!   loadgen's own.
//! * [`redis_geo`] — the Redis GEO comparison.
//! * [`server`] — the server process, `/metrics`, `/proc`.
//! * [`timeline`] — the server's `/metrics`, second by second.
//! * [`report`] — JSON and Markdown.

pub mod clients;
pub mod export;
pub mod journal;
pub mod pauses;
pub mod plan;
pub mod redis_geo;
pub mod report;
pub mod server;
pub mod soak;
pub mod timeline;
pub mod tls;
pub mod world;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use clients::{AlertsSeen, Check, FeedSeen, NearestSeen};
use plan::{Options, Plan, Source, Transport};
use world::{Fences, Shared, Sink};

/// Everything a run measured, for the report.
#[derive(Debug)]
pub struct Outcome {
    /// The plan.
    pub plan: Plan,
    /// Seconds the sender ran.
    pub seconds: f64,
    /// Fixes sent.
    pub sent: u64,
    /// Frames that could not be written.
    pub send_errors: u64,
    /// Server counters before and after (accepted, rejected, udp dropped).
    pub metrics_before: std::collections::BTreeMap<String, f64>,
    /// At the end of the warm-up (the server's latency histogram is read
    /// from here on).
    pub metrics_steady: Option<std::collections::BTreeMap<String, f64>>,
    /// After the drain.
    pub metrics_after: std::collections::BTreeMap<String, f64>,
    /// The server's `/metrics` each second of the run (fixes accepted a
    /// second among them).
    pub timeline: Vec<timeline::Second>,
    /// Alerts owed.
    pub expected: std::collections::HashSet<world::AlertKey>,
    /// Per alerts subscriber.
    pub alerts: Vec<AlertsSeen>,
    /// Alerts subscribers that failed.
    pub alerts_failed: Vec<String>,
    /// Positions subscribers.
    pub feeds: Vec<FeedSeen>,
    /// Standing nearest updates, per subscriber.
    pub standing: Vec<u64>,
    /// Nearest clients.
    pub nearest: Vec<NearestSeen>,
    /// The nearest answers checked against brute force.
    pub checks: clients::Checked,
    /// Server memory (now, peak) and CPU seconds, when local.
    pub usage: Option<(u64, u64, f64)>,
    /// Server CPU seconds at the start of the load, when local.
    pub cpu_before: Option<f64>,
    /// Loadgen's own CPU seconds at the start and at the end of the load:
    /// it shares the machine with the server.
    pub loadgen_cpu: (Option<f64>, Option<f64>),
    /// The Redis comparison.
    pub redis: Option<redis_geo::RedisRun>,
    /// With `--redis`: Redis's CPU seconds during the load, and its memory.
    pub journal: Option<(f64, serde_json::Value)>,
    /// Units the fleet registered.
    pub registered: usize,
    /// The analyst's export (`--export-at`).
    pub export: Option<export::ExportRun>,
    /// What the churn did (`--churn`).
    pub churn: Option<Arc<soak::Churn>>,
    /// The server's memory at the start of the load, each minute, and at
    /// its end (when loadgen started the server).
    pub memory: Vec<soak::MemorySample>,
    /// The commit checked out when the run started.
    pub commit: String,
    /// loadgen's own pauses during the run.
    pub pauses: Option<pauses::PauseLog>,
    /// Ticks of loadgen's main runtime (its alerts and nearest clients)
    /// over a second late.
    pub runtime_pauses: Option<pauses::PauseLog>,
}

/// Merges histograms.
fn merged<'a>(hs: impl Iterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut all = clients::histogram();
    for h in hs {
        let _ = all.add(h);
    }
    all
}

/// Runs loadgen with its flags; returns whether every check passed.
///
/// # Errors
/// The server or Redis cannot be reached, the output cannot be written.
pub fn main_with(opts: &Options) -> anyhow::Result<bool> {
    let plan = opts.plan()?;
    let commit = report::commit();
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let towns = Arc::new(bluelight_ingest::places::uk()?);
    let redis = if plan.journal {
        Some(journal::RedisProcess::start()?)
    } else {
        None
    };
    let mut srv = match (opts.server, opts.ingest) {
        (Some(http), Some(ingest)) => server::Server {
            http,
            ingest,
            device: None,
            child: None,
        },
        _ => {
            let bin = server::find_binary(opts.bluelight.as_deref())?;
            let mut flags: Vec<String> = Vec::new();
            if opts.realtime {
                flags.push("--realtime".into());
            }
            if let Some(r) = &redis {
                flags.extend(["--redis".into(), r.url()]);
            }
            flags.extend(opts.server_flags.iter().cloned());
            if plan.tls {
                let t = tls::install(&opts.out)?;
                flags.extend([
                    "--tls-cert".into(),
                    t.cert.display().to_string(),
                    "--tls-key".into(),
                    t.key.display().to_string(),
                ]);
            }
            let device = plan.source.listener();
            if let Some((flag, _)) = device {
                flags.extend([flag.into(), "127.0.0.1:0".into()]);
            }
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            server::start(&bin, &opts.out.join("server.log"), &flags, device.map(|d| d.1))?
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(2).enable_all();
    if opts.realtime {
        // Above the server's workers, below its writer: loadgen stands in
        // for clients on machines of their own, whose reading never waits
        // behind the server's sockets; and at `national` its clients read
        // tens of thousands of alert frames a second, which must not hold
        // up the engine.
        bluelight_ingest::priority::realtime_workers(
            &mut rt,
            bluelight_ingest::priority::REALTIME_PRIORITY + 1,
        );
    }
    let rt = rt.build()?;
    // The dispatch maps read megabytes of JSON a second: on their own
    // thread, at a lower priority, so the alerts and answers being timed
    // never wait behind them (nor does the server).
    let bulk = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("loadgen-maps")
        .on_thread_start(|| {
            bluelight_ingest::priority::lower_this_thread();
        })
        .enable_all()
        .build()?;
    let redis_cpu_before = redis.as_ref().and_then(journal::RedisProcess::cpu_s);
    let watcher = pauses::Pauses::start(rt.handle())?;
    let mut outcome = rt.block_on(run_bluelight(&plan, &srv, opts, &towns, bulk.handle()))?;
    let (pauses, runtime_pauses) = watcher.finish();
    outcome.pauses = Some(pauses);
    outcome.runtime_pauses = Some(runtime_pauses);
    outcome.commit = commit;
    drop(bulk);
    if let Some(r) = &redis {
        let cpu = r.cpu_s().unwrap_or(0.0) - redis_cpu_before.unwrap_or(0.0);
        outcome.journal = Some((cpu, r.memory()));
    }
    outcome.usage = srv.usage();
    outcome.loadgen_cpu.1 = server::cpu_seconds("self");
    srv.stop();
    if let Some(url) = &plan.redis {
        eprintln!("loadgen: the same fleet and nearest workload against Redis GEO at {url}");
        outcome.redis = Some(redis_geo::run(&plan, url, &towns).context("redis-geo")?);
    }
    let (json, md, passed) = report::render(&outcome);
    let stem = format!("loadgen-{}", plan.preset);
    std::fs::write(
        opts.out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(opts.out.join(format!("{stem}.md")), &md)?;
    println!("{md}");
    println!(
        "loadgen: wrote {} and {}",
        opts.out.join(format!("{stem}.json")).display(),
        opts.out.join(format!("{stem}.md")).display()
    );
    Ok(passed)
}

async fn put_fences(
    client: &reqwest::Client,
    http: std::net::SocketAddr,
    token: Option<&str>,
    fences: &Fences,
) -> anyhow::Result<()> {
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for i in 0..fences.list.len() {
        let mut req = client
            .put(format!(
                "{}://{http}/v1/fences/{}",
                tls::http_scheme(),
                fences.list[i].id
            ))
            .header("content-type", "application/geo+json")
            .body(fences.feature(i).to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.and_then(reqwest::Response::error_for_status);
            drop(permit);
            r.map(|_| ())
        }));
    }
    for t in tasks {
        t.await?.context("PUT fence")?;
    }
    Ok(())
}

async fn run_bluelight(
    plan: &Plan,
    srv: &server::Server,
    opts: &Options,
    towns: &Arc<Vec<bluelight_ingest::places::Place>>,
    bulk: &tokio::runtime::Handle,
) -> anyhow::Result<Outcome> {
    let client = tls::http_client()?;
    let token = opts.token.clone();
    let fences = Arc::new(Fences::generate(plan.fences, towns, plan.seed));
    put_fences(&client, srv.http, token.as_deref(), &fences).await?;
    let fleet = world::fleet(plan.units, plan.interval_ms, plan.seed, towns, 0);
    let unit_by_id: HashMap<String, u32> = fleet
        .units()
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id.clone(), i as u32))
        .collect();
    let shared = Arc::new(Shared {
        truth: std::sync::Mutex::new(world::truth(plan.units)),
        unit_by_id,
        ..Shared::default()
    });
    // Subscribers first, so they see the run from its first fix.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x5eed);
    let mut alert_tasks = Vec::new();
    for i in 0..plan.alerts {
        alert_tasks.push(tokio::spawn(clients::alerts_client(
            srv.http,
            token.clone(),
            shared.clone(),
            fences.clone(),
            i == 0 && plan.export_at.is_some(),
            stop_rx.clone(),
        )));
    }
    let mut feed_tasks = Vec::new();
    for _ in 0..plan.positions {
        let town = towns[rng.random_range(0..towns.len())].clone();
        feed_tasks.push(bulk.spawn(clients::positions_client(
            srv.http,
            token.clone(),
            town,
            plan.map_encoding,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    let mut standing_tasks = Vec::new();
    for _ in 0..plan.standing {
        let town = towns[rng.random_range(0..towns.len())].clone();
        standing_tasks.push(bulk.spawn(clients::standing_client(
            srv.http,
            token.clone(),
            town,
            stop_rx.clone(),
        )));
    }
    let churn = plan.churn.then(|| {
        let stats = Arc::new(soak::Churn::default());
        // Another seed: the churned fences are not the loaded ones.
        let pool = Arc::new(Fences::generate(500, towns, plan.seed ^ 0xc4a2));
        bulk.spawn(soak::churn(
            srv.http,
            token.clone(),
            towns.clone(),
            pool,
            plan.seed,
            stats.clone(),
            stop_rx.clone(),
        ));
        stats
    });
    // Registration, over the transport the fixes take (TCP keeps order).
    let mut sink = match plan.transport {
        Transport::Tcp => {
            let s = std::net::TcpStream::connect(srv.ingest)?;
            s.set_nodelay(true)?;
            Sink::Tcp(tls::blocking(s)?)
        }
        Transport::Udp => {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
            Sink::Udp(s, srv.ingest)
        }
    };
    world::register(&fleet, &mut sink)?;
    let registered = fleet.units().len();
    // A device protocol's fixes go to its own listener (registration
    // stayed FlatBuffers: it alone gives ids, agencies and kinds).
    if let Some(device) = srv.device {
        sink = match plan.source {
            Source::Nmea => Sink::Nmea(tls::blocking(std::net::TcpStream::connect(device)?)?),
            Source::Tak => Sink::Tak(tls::blocking(std::net::TcpStream::connect(device)?)?),
            Source::Lip => Sink::Lip(std::net::UdpSocket::bind("127.0.0.1:0")?, device),
            Source::Flatbuffers => sink,
        };
    }
    // Wait for the subscriptions (and for UDP registrations to land).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The same fleet, its reports starting now.
    let fleet = world::fleet(
        plan.units,
        plan.interval_ms,
        plan.seed,
        towns,
        bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock),
    );
    let metrics_before = server::metrics(&client, srv.http, token.as_deref()).await?;
    if plan.exact_nearest_check()
        && let Some(base) = metrics_before.get("bluelight_engine_fixes_seen_total")
    {
        let _ = shared.fixes_seen_base.set(*base as u64);
    }
    let cpu_before = srv.usage().map(|u| u.2);
    let loadgen_cpu_before = server::cpu_seconds("self");
    let started = Instant::now();
    let until = started + Duration::from_secs(plan.seconds);
    let steady_from = started + Duration::from_secs(plan.warmup_s);
    let _ = shared.steady_from.set(steady_from);
    let sender = {
        let shared = shared.clone();
        let fences = fences.clone();
        std::thread::Builder::new()
            .name("loadgen-sender".into())
            .spawn(move || {
                world::send_fleet(fleet, Some(&fences), &shared, sink, until);
                Instant::now()
            })?
    };
    // The analyst's download reads hundreds of megabytes: with the maps,
    // at their lower priority, so the clocks being timed do not wait on it.
    let analyst = plan.export_at.map(|at_s| {
        bulk.spawn(export::analyst(
            srv.http,
            token.clone(),
            shared.clone(),
            started + Duration::from_secs(at_s),
            at_s,
            plan.export_gzip,
        ))
    });
    let clients_n = plan.nearest_qps.div_ceil(500).max(1);
    // A small queue: an answer is checked against the positions sent
    // lately, so it must not wait long for its check.
    let (check_tx, check_rx) = std::sync::mpsc::sync_channel::<Check>(32);
    let checker = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("loadgen-checker".into())
            .spawn(move || clients::checker(&shared, check_rx))?
    };
    let mut nearest_tasks = Vec::new();
    if plan.nearest_qps > 0 {
        for c in 0..clients_n {
            nearest_tasks.push(tokio::spawn(clients::nearest_client(
                srv.http,
                token.clone(),
                f64::from(plan.nearest_qps) / f64::from(clients_n),
                plan.check_every,
                plan.seed + u64::from(c),
                towns.clone(),
                shared.clone(),
                check_tx.clone(),
                stop_rx.clone(),
            )));
        }
    }
    drop(check_tx);
    let bar = if opts.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::with_draw_target(Some(plan.seconds), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_bar} {pos}/{len} s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let mut timeline = timeline::Timeline::new(
        0.0,
        &metrics_before,
        srv.child.as_ref().map(std::process::Child::id),
    );
    let mut every = tokio::time::interval(Duration::from_secs(1));
    // A slow `/metrics` must not be followed by a burst of reads a moment
    // apart (each would look like a second with nothing accepted).
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    let mut metrics_steady = None;
    let mut memory = Vec::new();
    if let Some(u) = srv.usage() {
        memory.push(soak::MemorySample::new(0, u.0, &metrics_before));
    }
    while !shared.done.load(Ordering::Relaxed) {
        every.tick().await;
        if metrics_steady.is_none() && Instant::now() >= steady_from {
            metrics_steady = server::metrics(&client, srv.http, token.as_deref()).await.ok();
        }
        let asked = Instant::now();
        if let Ok(m) = server::metrics(&client, srv.http, token.as_deref()).await {
            let minute = started.elapsed().as_secs() / 60;
            if let Some(u) = srv.usage()
                && memory
                    .last()
                    .is_some_and(|s: &soak::MemorySample| s.minute < minute)
            {
                memory.push(soak::MemorySample::new(minute, u.0, &m));
            }
            let took_ms = asked.elapsed().as_secs_f64() * 1e3;
            timeline.push(started.elapsed().as_secs_f64(), took_ms, m);
            bar.set_message(format!(
                "{:.0} fixes/s accepted, {} sent",
                timeline.seconds.last().map_or(0.0, |s| s.accepted_per_s),
                shared.sent.load(Ordering::Relaxed)
            ));
        }
        bar.set_position(started.elapsed().as_secs().min(plan.seconds));
    }
    bar.finish_and_clear();
    // The sending time, not the loop's: it sees the sender stop only at its
    // next one-second tick, which would understate the rate by up to 1/s.
    let ended = sender.join().unwrap_or_else(|_| Instant::now());
    let seconds = ended.duration_since(started).as_secs_f64();
    // Drain: let the server apply what is queued and the alerts arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    let metrics_after = server::metrics(&client, srv.http, token.as_deref()).await?;
    if let Some(u) = srv.usage() {
        let minute = started.elapsed().as_secs_f64() / 60.0;
        memory.push(soak::MemorySample::new(minute.ceil() as u64, u.0, &metrics_after));
    }
    let mut outcome = Outcome {
        plan: plan.clone(),
        seconds,
        sent: shared.sent.load(Ordering::Relaxed),
        send_errors: shared.send_errors.load(Ordering::Relaxed),
        metrics_before,
        metrics_steady,
        metrics_after,
        timeline: timeline.seconds,
        expected: shared.expected.keys(),
        alerts: Vec::new(),
        alerts_failed: Vec::new(),
        feeds: Vec::new(),
        standing: Vec::new(),
        nearest: Vec::new(),
        checks: clients::Checked::default(),
        usage: None,
        cpu_before,
        loadgen_cpu: (loadgen_cpu_before, None),
        redis: None,
        journal: None,
        registered,
        export: None,
        churn,
        memory,
        commit: String::new(),
        pauses: None,
        runtime_pauses: None,
    };
    if let Some(a) = analyst {
        outcome.export = Some(a.await.unwrap_or_else(|e| export::ExportRun {
            error: Some(e.to_string()),
            ..export::ExportRun::default()
        }));
    }
    for t in alert_tasks {
        match t.await {
            Ok(Ok(seen)) => outcome.alerts.push(seen),
            Ok(Err(e)) => outcome.alerts_failed.push(e.to_string()),
            Err(e) => outcome.alerts_failed.push(e.to_string()),
        }
    }
    for t in feed_tasks {
        if let Ok(Ok(seen)) = t.await {
            outcome.feeds.push(seen);
        }
    }
    for t in standing_tasks {
        if let Ok(Ok(n)) = t.await {
            outcome.standing.push(n);
        }
    }
    for t in nearest_tasks {
        if let Ok(Ok(seen)) = t.await {
            outcome.nearest.push(seen);
        }
    }
    // Every sender is gone: the checker finishes what is queued.
    outcome.checks = tokio::task::spawn_blocking(move || checker.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the nearest checker panicked"))?;
    Ok(outcome)
}
