//! The report: JSON for machines and Markdown for people, with the machine,
//! the commit, the plan and the figures. A run with a wrong answer (a lost
//! fix, a missing, duplicate or unexpected alert, a wrong nearest answer)
//! fails, whatever its speed.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::Outcome;

fn pct(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|x| x.1.trim().to_owned())
    });
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        });
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory_gib": mem.map(|kb| (kb as f64 / 1048576.0 * 10.0).round() / 10.0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
    })
}

/// HEAD, with `+changes` when tracked files differ from it (the committed
/// reports aside: an earlier run's report is not a change to what ran).
/// Read when the run starts: an hour's soak must not report what was
/// checked out when it ended.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top,exclude)benches/results",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty { format!("{c}+changes") } else { c }
        }
        None => "unknown".into(),
    }
}

fn diff(o: &Outcome, key: &str) -> f64 {
    o.metrics_after.get(key).copied().unwrap_or(0.0) - o.metrics_before.get(key).copied().unwrap_or(0.0)
}

/// Quantiles of one of the server's own latency histograms (`name`, without
/// `_bucket`) over the run (the upper bound of the bucket each falls in),
/// from `/metrics` before and after.
fn server_quantiles(o: &Outcome, name: &str) -> Value {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = o
        .metrics_after
        .keys()
        .filter_map(|k| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            // After the warm-up when it was read then, else the whole run.
            let after = o.metrics_after.get(k).copied().unwrap_or(0.0);
            let from = o.metrics_steady.as_ref().unwrap_or(&o.metrics_before);
            Some((bound, after - from.get(k).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return json!({"count": 0});
    }
    let at = |q: f64| {
        buckets.iter().find(|b| b.1 >= q * total).map(|b| {
            if b.0.is_finite() {
                json!(b.0 * 1000.0)
            } else {
                json!("> 10000")
            }
        })
    };
    json!({"count": total, "p50_ms_at_most": at(0.5), "p99_ms_at_most": at(0.99), "p999_ms_at_most": at(0.999)})
}

/// A row's text for [`server_quantiles`].
fn at_most(q: &Value) -> String {
    format!(
        "{} / {} / {} ms",
        f(&q["p50_ms_at_most"]),
        f(&q["p99_ms_at_most"]),
        f(&q["p999_ms_at_most"])
    )
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Builds both reports; returns them and whether every check passed.
pub fn render(o: &Outcome) -> (Value, String, bool) {
    let p = &o.plan;
    let mut failures: Vec<String> = Vec::new();
    let accepted = diff(o, "bluelight_fixes_accepted_total");
    let rejected: HashMap<String, f64> = o
        .metrics_after
        .keys()
        .filter(|k| k.starts_with("bluelight_fixes_rejected_total{"))
        .map(|k| {
            (
                k.trim_start_matches("bluelight_fixes_rejected_total").to_owned(),
                diff(o, k),
            )
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let udp_dropped = diff(o, "bluelight_udp_dropped_total");
    let lost = (o.sent as f64 - accepted).max(0.0);
    if lost > 0.0 {
        failures.push(format!(
            "{lost} fixes lost (sent {}, accepted {accepted})",
            o.sent
        ));
    }
    if o.send_errors > 0 {
        failures.push(format!("{} frames could not be sent", o.send_errors));
    }
    // The first and last seconds are partial.
    let mut steady: Vec<f64> = o
        .timeline
        .iter()
        .map(|s| s.accepted_per_s)
        .skip(1)
        .take(o.timeline.len().saturating_sub(2))
        .collect();
    let min_1s = steady.iter().copied().fold(f64::INFINITY, f64::min);
    let median_1s = median(&mut steady);

    // Alerts: every subscriber must get every owed alert exactly once.
    let (mut missing, mut duplicate, mut unexpected, mut closed) = (0u64, 0u64, 0u64, 0u64);
    for a in &o.alerts {
        let counts = a.counts();
        missing += o.expected.iter().filter(|k| !counts.contains_key(k)).count() as u64;
        duplicate += counts
            .values()
            .filter(|n| **n > 1)
            .map(|n| u64::from(*n - 1))
            .sum::<u64>();
        unexpected += counts.keys().filter(|k| !o.expected.contains(k)).count() as u64 + a.unknown;
        closed += u64::from(a.closed_early.is_some());
    }
    if missing + duplicate + unexpected > 0 {
        failures.push(format!(
            "alerts: {missing} missing, {duplicate} duplicate, {unexpected} unexpected (summed over subscribers)"
        ));
    }
    if closed > 0 || !o.alerts_failed.is_empty() {
        failures.push(format!(
            "{closed} alerts subscribers closed early, {} failed: {:?}",
            o.alerts_failed.len(),
            o.alerts_failed
        ));
    }
    let alert_latency = super::merged(o.alerts.iter().map(|a| &a.latency));
    let alert_latency_warmup = super::merged(o.alerts.iter().map(|a| &a.latency_warmup));
    let alert_latency_export = super::merged(o.alerts.iter().map(|a| &a.latency_export));
    if let Some(e) = o.export.as_ref().and_then(|e| e.error.as_ref()) {
        failures.push(format!("the analyst's export failed: {e}"));
    }
    let feed_delay = super::merged(o.feeds.iter().map(|f| &f.delay));
    let feed_delay_warmup = super::merged(o.feeds.iter().map(|f| &f.delay_warmup));
    let rtt = super::merged(o.nearest.iter().map(|n| &n.rtt));
    let rtt_warmup = super::merged(o.nearest.iter().map(|n| &n.rtt_warmup));
    let (q_sent, q_answered, q_errors, q_skipped) = o.nearest.iter().fold((0, 0, 0, 0), |a, n| {
        (
            a.0 + n.sent,
            a.1 + n.answered,
            a.2 + n.errors,
            a.3 + n.check_skipped,
        )
    });
    let (q_checked, q_wrong, q_unjudged) = (o.checks.checked, o.checks.wrong, o.checks.unjudged);
    let wrong_examples = &o.checks.wrong_examples;
    if q_wrong > 0 {
        failures.push(format!(
            "{q_wrong} of {q_checked} checked nearest answers wrong: {wrong_examples:?}"
        ));
    }
    if q_errors > 0 {
        failures.push(format!("{q_errors} nearest queries got an error"));
    }
    let exact = p.exact_nearest_check();
    if exact && p.nearest_qps > 0 && q_checked == 0 {
        failures.push("no nearest answer was checked".into());
    }
    if exact && q_unjudged > 0 {
        failures.push(format!(
            "{q_unjudged} nearest answers could not be judged (the server held positions more than {} reports old)",
            super::world::KEPT
        ));
    }
    let cpu = match (o.usage, o.cpu_before) {
        (Some(u), Some(b)) => Some((u.2 - b) / (o.seconds + 3.0) * 100.0),
        _ => None,
    };
    let loadgen_cpu = match o.loadgen_cpu {
        (Some(b), Some(a)) => Some((a - b) / (o.seconds + 3.0) * 100.0),
        _ => None,
    };
    let accepted_rate = accepted / o.seconds;
    let bluelight = json!({
        "fixes": {
            "offered_per_s": p.offered_rate(),
            "sent": o.sent,
            "sent_per_s": o.sent as f64 / o.seconds,
            "accepted": accepted,
            "accepted_per_s": accepted_rate,
            "accepted_per_s_median_1s": median_1s,
            "accepted_per_s_min_1s": if min_1s.is_finite() { min_1s } else { 0.0 },
            "rejected": rejected,
            "udp_dropped": udp_dropped,
            "lost": lost,
        },
        "alerts": {
            "owed": o.expected.len(),
            "subscribers": o.alerts.len(),
            "received": o.alerts.iter().map(|a| a.received.len() as u64).sum::<u64>(),
            "missing": missing,
            "duplicate": duplicate,
            "unexpected": unexpected,
            "fix_to_alert": pct(&alert_latency),
            "fix_to_alert_warmup": pct(&alert_latency_warmup),
            "fix_to_alert_during_export": pct(&alert_latency_export),
            "server_fix_to_alert": server_quantiles(o, "bluelight_fix_to_alert_seconds"),
        },
        "positions": {
            "subscribers": o.feeds.len(),
            "messages": o.feeds.iter().map(|f| f.messages).sum::<u64>(),
            "binary_messages": o.feeds.iter().map(|f| f.binary).sum::<u64>(),
            "units": o.feeds.iter().map(|f| f.units).sum::<u64>(),
            "delay": pct(&feed_delay),
            "delay_warmup": pct(&feed_delay_warmup),
        },
        "standing_nearest": {
            "subscribers": o.standing.len(),
            "updates": o.standing.iter().sum::<u64>(),
        },
        "nearest": {
            "sent": q_sent, "answered": q_answered, "errors": q_errors,
            "checked": q_checked, "wrong": q_wrong, "wrong_examples": wrong_examples,
            "unjudged": q_unjudged,
            "exact_check": if exact {
                "against the positions the server held when it answered (its fixes_seen)"
            } else {
                "none: the exact check needs FlatBuffers fixes over TCP, one ordered stream"
            },
            "check_skipped": q_skipped,
            "round_trip": pct(&rtt),
            "round_trip_warmup": pct(&rtt_warmup),
            "server_round_trip": server_quantiles(o, "bluelight_ws_nearest_seconds"),
        },
        "server": {
            "rss_mib": o.usage.map(|u| u.0 as f64 / 1048576.0),
            "peak_rss_mib": o.usage.map(|u| u.1 as f64 / 1048576.0),
            "cpu_percent_of_one_core": cpu,
            "loadgen_cpu_percent_of_one_core": loadgen_cpu,
            "loadgen_pauses": o.pauses,
            "loadgen_runtime_pauses": o.runtime_pauses,
            "realtime_threads": o.metrics_after.get("bluelight_realtime_threads").copied().unwrap_or(0.0),
            "writer_nice": o.metrics_after.get("bluelight_writer_nice").copied(),
            "writer_on_cpu": super::timeline::mean_after(&o.timeline, o.plan.warmup_s as f64, |s| s.writer_cpu),
            "writer_waiting": super::timeline::mean_after(&o.timeline, o.plan.warmup_s as f64, |s| s.writer_waiting),
            "metrics": o.metrics_after,
        },
    });
    let redis = o.redis.as_ref().map(|r| {
        let rate = r.sent as f64 / r.seconds;
        let ratio = |a: f64, b: f64| if b > 0.0 { Some(a / b) } else { None };
        let q = |h: &Histogram<u64>, x: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(x) as f64
            }
        };
        json!({
            "sent": r.sent, "sent_per_s": rate, "members": r.members, "errors": r.errors,
            "used_memory_mib": r.used_memory.map(|b| b as f64 / 1048576.0),
            "nearest": {"answered": r.answered, "round_trip": pct(&r.rtt), "round_trip_warmup": pct(&r.rtt_warmup)},
            "ratio": {
                "ingest_bluelight_over_redis": ratio(accepted_rate, rate),
                "nearest_p50_redis_over_bluelight": ratio(q(&r.rtt, 0.5), q(&rtt, 0.5)),
                "nearest_p99_redis_over_bluelight": ratio(q(&r.rtt, 0.99), q(&rtt, 0.99)),
            },
            "not_compared": "fences and alerts, positions feeds, standing nearest: Redis GEO has none",
        })
    });
    let journal = o.journal.as_ref().map(|(cpu_s, memory)| {
        json!({
            "redis_cpu_percent_of_one_core": cpu_s / (o.seconds + 3.0) * 100.0,
            "redis": memory,
            "journal_entries": diff(o, "bluelight_journal_entries_total"),
            "journal_mib_per_s": diff(o, "bluelight_journal_bytes_total") / o.seconds / 1048576.0,
            "journal_failures": diff(o, "bluelight_journal_failures_total"),
            "snapshots": o.metrics_after.get("bluelight_snapshots_total"),
            "snapshot_mib": o.metrics_after.get("bluelight_snapshot_bytes").map(|b| b / 1048576.0),
            "snapshot_copy_ms": o.metrics_after.get("bluelight_snapshot_copy_microseconds").map(|u| u / 1000.0),
            "snapshot_encode_ms": o.metrics_after.get("bluelight_snapshot_encode_microseconds").map(|u| u / 1000.0),
            "outbox_dropped": o.metrics_after.get("bluelight_outbox_dropped_total"),
        })
    });
    let export = o.export.as_ref().map(|e| {
        let samples = o
            .alerts
            .iter()
            .map(|a| a.samples.as_slice())
            .find(|s| !s.is_empty())
            .unwrap_or(&[]);
        let windows: serde_json::Map<String, Value> = e
            .windows(samples)
            .map(|ws| ws.iter().map(|(k, h)| ((*k).to_owned(), pct(h))).collect())
            .unwrap_or_default();
        json!({
            "fix_to_alert_one_subscriber": windows,
            "at_s": e.at_s,
            "seconds": e.seconds(),
            "mib": e.bytes as f64 / 1048576.0,
            "mib_per_s": e.bytes as f64 / 1048576.0 / e.seconds().max(1e-9),
            "fixes_at_most": e.fixes_at_most,
            "encoding": e.encoding,
            "error": e.error,
        })
    });
    let memory = soak_report(o, &mut failures);
    let passed = failures.is_empty();
    let report = json!({
        "passed": passed,
        "failures": failures,
        "preset": p.preset,
        "commit": o.commit,
        "machine": machine(),
        "when_ms": bluelight_engine::Clock::now_ms(&bluelight_engine::SystemClock),
        "params": {
            "units": p.units, "interval_ms": p.interval_ms, "seconds": p.seconds,
            "warmup_s": p.warmup_s, "fences": p.fences,
            "positions_subscribers": p.positions, "alerts_subscribers": p.alerts,
            "standing_nearest_subscribers": p.standing, "nearest_qps": p.nearest_qps,
            "check_every": p.check_every,
            "transport": match p.source.listener() {
                // The device protocol and its listener, e.g. "nmea-tcp".
                Some((flag, _)) => flag.trim_start_matches("--").replace("cot-tcp", "tak-tcp"),
                None => format!("{:?}", p.transport).to_lowercase(),
            } + if p.tls { ", clients over HTTPS and WSS (--tls)" } else { "" },
            "tls": p.tls,
            "map_encoding": p.map_encoding.as_str(),
            "seed": p.seed, "registered": o.registered,
        },
        "loadgen_realtime_threads": bluelight_ingest::priority::realtime_threads(),
        "bluelight": bluelight,
        "redis_geo": redis,
        "journal": journal,
        "export": export,
        "memory": memory,
        "timeline": {
            "worst_seconds": super::timeline::worst(&o.timeline),
            "seconds": o.timeline,
        },
    });
    let md = markdown(&report);
    (report, md, passed)
}

/// The server's memory each minute and, with `--churn`, what the churn
/// did; a churn that failed, or RSS that grew 5% or more after minute 10
/// of a run of at least 20 minutes, fails the run (issue 16).
fn soak_report(o: &Outcome, failures: &mut Vec<String>) -> Value {
    let growth = super::soak::growth_after_ten(&o.memory);
    if let Some(g) = growth.filter(|g| *g >= 0.05) {
        failures.push(format!(
            "server RSS grew {:.1}% after minute 10 (at most 5%)",
            g * 100.0
        ));
    }
    let churn = o.churn.as_ref().map(|c| {
        let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let last_error = c.last_error.lock().ok().and_then(|e| e.clone());
        let first_errors = c.first_errors.lock().map(|e| e.clone()).unwrap_or_default();
        if n(&c.errors) > 0 {
            failures.push(format!(
                "{} churn operations failed; the last: {}",
                n(&c.errors),
                last_error.as_deref().unwrap_or("?")
            ));
        }
        if n(&c.fences_put) == 0 || n(&c.sessions) == 0 {
            failures.push("the churn put no fence or closed no session".into());
        }
        json!({
            "fences_put": n(&c.fences_put),
            "fences_deleted": n(&c.fences_deleted),
            "sessions": n(&c.sessions),
            "subscribed": n(&c.subscribed),
            "unsubscribed": n(&c.unsubscribed),
            "errors": n(&c.errors),
            "last_error": last_error,
            "first_errors": first_errors,
        })
    });
    json!({
        "samples": o.memory.iter().map(|m| {
            let mut v = json!({"minute": m.minute, "rss_mib": m.rss as f64 / 1048576.0});
            for (k, g) in &m.gauges {
                v[k.trim_start_matches("bluelight_")] = json!(g);
            }
            v
        }).collect::<Vec<_>>(),
        "rss_growth_after_minute_10": growth,
        "churn": churn,
    })
}

fn f(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else if x.abs() >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.3}")
            }
        }
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn lat(v: &Value) -> String {
    if v["count"] == 0 {
        return "—".into();
    }
    format!(
        "{} / {} / {} / {} ms (n={})",
        f(&v["p50_ms"]),
        f(&v["p99_ms"]),
        f(&v["p999_ms"]),
        f(&v["max_ms"]),
        f(&v["count"])
    )
}

fn markdown(r: &Value) -> String {
    let b = &r["bluelight"];
    let p = &r["params"];
    let mut s = String::new();
    s.push_str(&format!(
        "# loadgen `{}` — {}\n\n",
        f(&r["preset"]),
        if r["passed"] == true { "PASSED" } else { "FAILED" }
    ));
    s.push_str(&format!(
        "commit `{}`, {} ({} cores, {} GiB), kernel {}\n\n",
        f(&r["commit"]),
        f(&r["machine"]["cpu"]),
        f(&r["machine"]["cores"]),
        f(&r["machine"]["memory_gib"]),
        f(&r["machine"]["kernel"])
    ));
    s.push_str(&format!(
        "{} units every {} ms for {} s over {}; {} fences; {} positions ({}), {} alerts, {} standing-nearest subscribers; {} nearest/s (1 in {} checked); real-time (SCHED_FIFO) threads: server {}, loadgen {}; the server's writer at nice {}\n\n",
        f(&p["units"]), f(&p["interval_ms"]), f(&p["seconds"]), f(&p["transport"]), f(&p["fences"]),
        f(&p["positions_subscribers"]), f(&p["map_encoding"]), f(&p["alerts_subscribers"]), f(&p["standing_nearest_subscribers"]),
        f(&p["nearest_qps"]), f(&p["check_every"]),
        f(&b["server"]["realtime_threads"]),
        f(&r["loadgen_realtime_threads"]),
        f(&b["server"]["writer_nice"])
    ));
    s.push_str(&format!(
        "Latencies are of the run after its first {} s (warm-up: every unit's first report, every fence's first entries); \
         the warm-up's own figures are in their rows. Every check covers the whole run.\n\n",
        f(&p["warmup_s"])
    ));
    if !r["journal"].is_null() {
        let j = &r["journal"];
        s.push_str(&format!(
            "Journal on (`bluelight serve --redis`, redis-server with an append-only file, fsync every second): {} MiB/s journaled in {} entries, {} failures; Redis at {} % of one core, {} MiB used (journal {} MiB, snapshot {} MiB, alerts {} MiB, history {} MiB in {} segments); {} snapshots, the last {} MiB: the writer held {} ms for the copy, encoded in {} ms off it; outbox dropped {}.\n\n",
            f(&j["journal_mib_per_s"]), f(&j["journal_entries"]), f(&j["journal_failures"]),
            f(&j["redis_cpu_percent_of_one_core"]), f(&j["redis"]["used_memory_mib"]),
            f(&j["redis"]["journal_mib"]), f(&j["redis"]["snapshot_mib"]), f(&j["redis"]["alerts_mib"]),
            f(&j["redis"]["history_mib"]), f(&j["redis"]["history_segments"]),
            f(&j["snapshots"]), f(&j["snapshot_mib"]), f(&j["snapshot_copy_ms"]), f(&j["snapshot_encode_ms"]), f(&j["outbox_dropped"]),
        ));
    }
    if let Some(fs) = r["failures"].as_array().filter(|a| !a.is_empty()) {
        s.push_str("## Failures\n\n");
        for x in fs {
            s.push_str(&format!("* {}\n", f(x)));
        }
        s.push('\n');
    }
    s.push_str("| measure | bluelight |");
    let redis = &r["redis_geo"];
    let has_redis = !redis.is_null();
    s.push_str(if has_redis {
        " Redis GEO | ratio |\n|---|---|---|---|\n"
    } else {
        "\n|---|---|\n"
    });
    let x = &b["fixes"];
    let row = |s: &mut String, name: &str, ours: String, theirs: Option<String>, ratio: Option<String>| {
        s.push_str(&format!("| {name} | {ours} |"));
        if has_redis {
            s.push_str(&format!(
                " {} | {} |",
                theirs.unwrap_or("—".into()),
                ratio.unwrap_or("—".into())
            ));
        }
        s.push('\n');
    };
    row(&mut s, "fixes offered / s", f(&x["offered_per_s"]), None, None);
    row(
        &mut s,
        "fixes accepted / s (whole run)",
        f(&x["accepted_per_s"]),
        Some(format!("{} (GEOADD sent)", f(&redis["sent_per_s"]))),
        Some(format!("{}×", f(&redis["ratio"]["ingest_bluelight_over_redis"]))),
    );
    row(
        &mut s,
        "accepted / s, median and worst 1 s",
        format!(
            "{} / {}",
            f(&x["accepted_per_s_median_1s"]),
            f(&x["accepted_per_s_min_1s"])
        ),
        None,
        None,
    );
    row(
        &mut s,
        "fixes sent / accepted / lost",
        format!("{} / {} / {}", f(&x["sent"]), f(&x["accepted"]), f(&x["lost"])),
        Some(format!(
            "{} / {} members",
            f(&redis["sent"]),
            f(&redis["members"])
        )),
        None,
    );
    row(&mut s, "rejected by reason", f(&x["rejected"]), None, None);
    let a = &b["alerts"];
    row(
        &mut s,
        "alerts owed / received (all subscribers)",
        format!("{} / {}", f(&a["owed"]), f(&a["received"])),
        Some("no geofences".into()),
        None,
    );
    row(
        &mut s,
        "alerts missing / duplicate / unexpected",
        format!(
            "{} / {} / {}",
            f(&a["missing"]),
            f(&a["duplicate"]),
            f(&a["unexpected"])
        ),
        None,
        None,
    );
    row(
        &mut s,
        "fix-to-alert p50/p99/p999/max",
        lat(&a["fix_to_alert"]),
        None,
        None,
    );
    row(
        &mut s,
        "fix-to-alert during warm-up p50/p99/p999/max",
        lat(&a["fix_to_alert_warmup"]),
        None,
        None,
    );
    if !r["export"].is_null() {
        let e = &r["export"];
        row(
            &mut s,
            "fix-to-alert while the analyst's export ran, p50/p99/p999/max",
            lat(&a["fix_to_alert_during_export"]),
            None,
            None,
        );
        let w = &e["fix_to_alert_one_subscriber"];
        row(
            &mut s,
            "one subscriber's fix-to-alert, p50/p99/p999/max: the export's window, and as long before and after",
            format!(
                "before {}; during {}; after {}",
                lat(&w["before"]),
                lat(&w["during"]),
                lat(&w["after"])
            ),
            None,
            None,
        );
        row(
            &mut s,
            "the analyst's export (all history, GeoJSON)",
            format!(
                "from {} s: {} MiB{} ({} fixes at most) in {} s, {} MiB/s",
                f(&e["at_s"]),
                f(&e["mib"]),
                e["encoding"]
                    .as_str()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                f(&e["fixes_at_most"]),
                f(&e["seconds"]),
                f(&e["mib_per_s"])
            ),
            None,
            None,
        );
    }
    row(
        &mut s,
        "server's own fix-to-frame, p50/p99/p999 at most",
        at_most(&a["server_fix_to_alert"]),
        None,
        None,
    );
    row(
        &mut s,
        "positions feed delay p50/p99/p999/max",
        lat(&b["positions"]["delay"]),
        Some("no feeds".into()),
        None,
    );
    row(
        &mut s,
        "standing nearest updates",
        f(&b["standing_nearest"]["updates"]),
        Some("no standing queries".into()),
        None,
    );
    let n = &b["nearest"];
    row(
        &mut s,
        "nearest k=10 round trip p50/p99/p999/max",
        lat(&n["round_trip"]),
        Some(lat(&redis["nearest"]["round_trip"])),
        Some(format!(
            "Redis/bluelight p50 {}×, p99 {}×",
            f(&redis["ratio"]["nearest_p50_redis_over_bluelight"]),
            f(&redis["ratio"]["nearest_p99_redis_over_bluelight"])
        )),
    );
    row(
        &mut s,
        "server's own nearest frame-to-frame, p50/p99/p999 at most",
        at_most(&n["server_round_trip"]),
        None,
        None,
    );
    row(
        &mut s,
        "nearest round trip during warm-up p50/p99/p999/max",
        lat(&n["round_trip_warmup"]),
        Some(lat(&redis["nearest"]["round_trip_warmup"])),
        None,
    );
    row(
        &mut s,
        "nearest answered / checked exactly / wrong / unjudged",
        format!(
            "{} / {} / {} / {}",
            f(&n["answered"]),
            f(&n["checked"]),
            f(&n["wrong"]),
            f(&n["unjudged"])
        ),
        Some(format!("{} / not checked", f(&redis["nearest"]["answered"]))),
        None,
    );
    let sv = &b["server"];
    row(
        &mut s,
        "server RSS / peak (MiB)",
        format!("{} / {}", f(&sv["rss_mib"]), f(&sv["peak_rss_mib"])),
        Some(format!("{} (used_memory)", f(&redis["used_memory_mib"]))),
        None,
    );
    row(
        &mut s,
        "server CPU (% of one core)",
        f(&sv["cpu_percent_of_one_core"]),
        None,
        None,
    );
    if let (Some(on), Some(waiting)) = (sv["writer_on_cpu"].as_f64(), sv["writer_waiting"].as_f64())
        && on + waiting > 0.0
    {
        row(
            &mut s,
            "server's writer on a CPU / runnable but waiting for one (mean share of a second, after warm-up)",
            shares(on, waiting),
            None,
            None,
        );
    }
    row(
        &mut s,
        "loadgen's own CPU (% of one core, same machine)",
        f(&sv["loadgen_cpu_percent_of_one_core"]),
        None,
        None,
    );
    for (key, what) in [
        (
            "loadgen_pauses",
            "loadgen's own pauses over 1 s (a 100 ms ticker thread; monotonic / wall clock)",
        ),
        (
            "loadgen_runtime_pauses",
            "loadgen's runtime late over 1 s (a 100 ms ticker task beside its alerts and nearest clients)",
        ),
    ] {
        if let Some(seen) = pauses_said(&sv[key]) {
            row(&mut s, what, seen, None, None);
        }
    }
    timeline_markdown(&r["timeline"], &mut s);
    memory_markdown(&r["memory"], &mut s);
    if has_redis {
        s.push_str(&format!("\nNot compared: {}.\n", f(&redis["not_compared"])));
        if b["server"]["realtime_threads"].as_f64().is_some_and(|n| n > 0.0) {
            s.push_str(
                "\nbluelight's hot threads ran under SCHED_FIFO (`--realtime`); redis-server ran at the priority it was started with.\n",
            );
        }
        let offered = x["offered_per_s"].as_f64().unwrap_or(0.0);
        let kept_up = |v: &Value| v.as_f64().is_some_and(|r| r >= 0.97 * offered);
        if kept_up(&x["accepted_per_s"]) && kept_up(&redis["sent_per_s"]) {
            s.push_str(
                "\nBoth kept up with the offered rate, so the ingest ratio only says that; \
                 `--preset max` offers more than either takes.\n",
            );
        }
    }
    s
}

/// The churn and the memory table, for runs with `--churn` or longer than
/// a couple of minutes.
fn memory_markdown(m: &Value, s: &mut String) {
    let samples = m["samples"].as_array().map_or(&[][..], Vec::as_slice);
    let c = &m["churn"];
    if !c.is_null() {
        s.push_str(&format!(
            "\nChurn: {} fences put, {} deleted; {} sessions opened and closed, {} subscriptions made, {} dropped by `unsubscribe`; {} failed{}.\n",
            f(&c["fences_put"]),
            f(&c["fences_deleted"]),
            f(&c["sessions"]),
            f(&c["subscribed"]),
            f(&c["unsubscribed"]),
            f(&c["errors"]),
            c["last_error"].as_str().map(|e| format!(" (last: {e})")).unwrap_or_default(),
        ));
        for e in c["first_errors"].as_array().into_iter().flatten() {
            s.push_str(&format!("* {}\n", e.as_str().unwrap_or_default()));
        }
    }
    if c.is_null() && samples.len() < 4 {
        return;
    }
    s.push_str(&format!(
        "\nServer memory each minute; RSS growth after minute 10: {}.\n\n\
         | minute | RSS MiB | units | fences | regions / slots | candidate sets | sessions | history fixes |\n|---|---|---|---|---|---|---|---|\n",
        m["rss_growth_after_minute_10"]
            .as_f64()
            .map_or("not judged (under 20 minutes)".into(), |g| format!("{:.2}%", g * 100.0))
    ));
    for x in samples {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} |\n",
            f(&x["minute"]),
            f(&x["rss_mib"]),
            f(&x["units"]),
            f(&x["fences"]),
            f(&x["engine_regions"]),
            f(&x["engine_region_slots"]),
            f(&x["engine_candidate_sets"]),
            f(&x["ws_sessions"]),
            f(&x["history_fixes"]),
        ));
    }
}

/// The seconds that accepted fewest fixes, with what the server's gauges
/// said then: where a stall was (the writer, the runtime, the sessions).
fn timeline_markdown(t: &Value, s: &mut String) {
    let worst = t["worst_seconds"].as_array().map_or(&[][..], Vec::as_slice);
    if worst.is_empty() {
        return;
    }
    s.push_str(
        "\nThe seconds that accepted fewest fixes, from `/metrics` (every second is in the JSON's `timeline`): \
         runtime busy is the async workers' share of their time (a worker's busy spell is counted when it ends), alerts over 1 s are by the server's own clock, steal is CPU time the hypervisor took from the CPU it took most from; the TCP columns are the machine's (`/proc/net`): retransmission timeouts, segments retransmitted, SYNs dropped by a full accept queue; the writer's columns are its thread's share of the second on a CPU and runnable but waiting for one (`schedstat`; blank when loadgen did not start the server).\n\n\
         | at s | accepted/s | `/metrics` took ms | ingest queue | writer queries | writer on CPU / waiting | session queues (max one) | runtime busy | runtime global queue | alerts over 1 s | steal ms | TCP timeouts / retransmits / listen overflows |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for x in worst {
        s.push_str(&format!(
            "| {:.0} | {:.0} | {:.0} | {} | {} | {} | {} ({}) | {:.0}% | {} | {} | {} | {} / {} / {} |\n",
            x["at_s"].as_f64().unwrap_or(0.0),
            x["accepted_per_s"].as_f64().unwrap_or(0.0),
            x["metrics_ms"].as_f64().unwrap_or(0.0),
            f(&x["ingest_queue"]),
            f(&x["writer_queries"]),
            writer_said(x),
            f(&x["ws_queued"]),
            f(&x["ws_queued_max"]),
            x["runtime_busy"].as_f64().unwrap_or(0.0) * 100.0,
            f(&x["runtime_global_queue"]),
            f(&x["alerts_over_1s"]),
            f(&x["steal_ms_max_cpu"]),
            f(&x["tcp_timeouts"]),
            f(&x["tcp_retransmits"]),
            f(&x["listen_overflows"]),
        ));
    }
}

/// The writer's share of a second on a CPU and waiting for one; blank
/// without a reading.
fn writer_said(x: &Value) -> String {
    let on = x["writer_cpu"].as_f64().unwrap_or(0.0);
    let waiting = x["writer_waiting"].as_f64().unwrap_or(0.0);
    if on == 0.0 && waiting == 0.0 {
        return String::new();
    }
    shares(on, waiting)
}

/// Two shares of a second as percentages, `on / waiting`.
fn shares(on: f64, waiting: f64) -> String {
    format!("{:.0}% / {:.0}%", on * 100.0, waiting * 100.0)
}

/// What a pause watcher saw, said; `None` when it did not run.
fn pauses_said(pauses: &Value) -> Option<String> {
    if !pauses.is_object() {
        return None;
    }
    let listed: Vec<String> = pauses["first"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "at {:.0} s: {:.0} / {:.0} ms",
                p["at_s"].as_f64().unwrap_or(0.0),
                p["monotonic_ms"].as_f64().unwrap_or(0.0),
                p["wall_ms"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    Some(format!(
        "{}; longest {:.0} / {:.0} ms{}",
        pauses["count"].as_u64().unwrap_or(0),
        pauses["longest_monotonic_ms"].as_f64().unwrap_or(0.0),
        pauses["longest_wall_ms"].as_f64().unwrap_or(0.0),
        if listed.is_empty() {
            String::new()
        } else {
            format!(" ({})", listed.join("; "))
        }
    ))
}
