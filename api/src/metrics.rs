//! `GET /metrics` (scope `admin`): Prometheus text of the pipeline, the
//! sessions, the alerts and the engine.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bluelight_ingest::validate::Reject;

use crate::auth::Scope;
use bluelight_ingest::journal::stage::JournalStatus;

use crate::hub::ALERT_EVENTS;
use crate::outbox::Outbox;
use crate::state::AppState;

/// The metrics page.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        crate::openapi::Refused,
    ),
    security(("bearer" = [])))]
pub async fn metrics(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = s.tokens.check(&headers, None, Some(Scope::Admin)) {
        return denied.into_response();
    }
    let mut m = String::new();
    let c = &s.queue.counters;
    let _ = writeln!(
        m,
        "# HELP bluelight_fixes_accepted_total Fixes applied to the engine."
    );
    let _ = writeln!(m, "# TYPE bluelight_fixes_accepted_total counter");
    let _ = writeln!(m, "bluelight_fixes_accepted_total {}", c.accepted());
    let _ = writeln!(
        m,
        "# HELP bluelight_fixes_rejected_total Fixes refused, by reason."
    );
    let _ = writeln!(m, "# TYPE bluelight_fixes_rejected_total counter");
    for r in Reject::ALL {
        let _ = writeln!(
            m,
            "bluelight_fixes_rejected_total{{reason=\"{}\"}} {}",
            r.as_str(),
            c.rejected(r)
        );
    }
    let _ = writeln!(
        m,
        "# HELP bluelight_fix_measurements_cleared_total Speeds, headings and accuracies out of range, kept as unknown (their fixes accepted).\n# TYPE bluelight_fix_measurements_cleared_total counter\nbluelight_fix_measurements_cleared_total {}",
        c.measurements_cleared.load(Ordering::Relaxed)
    );
    if let Some(c) = &s.cot_out {
        let _ = writeln!(
            m,
            "# HELP bluelight_cot_out_clients TAK clients (and the tak-out server) being sent the live picture.\n# TYPE bluelight_cot_out_clients gauge\nbluelight_cot_out_clients {}\n# HELP bluelight_cot_out_units_total Unit events sent as CoT, all clients together.\n# TYPE bluelight_cot_out_units_total counter\nbluelight_cot_out_units_total {}",
            c.clients.load(Ordering::Relaxed),
            c.units_sent.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        m,
        "# HELP bluelight_ingest_ignored_total Well-formed device messages that carry no fix, passed over (NMEA sentences other than RMC and GGA, LIP PDUs other than location reports, CoT events that are not units: markers, chat, drawings).\n# TYPE bluelight_ingest_ignored_total counter\nbluelight_ingest_ignored_total {}",
        c.ignored.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_writer_longest_step_seconds The writer's longest step since start (a batch, a query, a slice of bulk work, a snapshot's copy, idle work; waiting for the engine included): every fix and query waits behind a step.\n# TYPE bluelight_writer_longest_step_seconds gauge\nbluelight_writer_longest_step_seconds {}\n# HELP bluelight_writer_long_steps_total Writer steps of 250 ms or more, each also logged with what it was.\n# TYPE bluelight_writer_long_steps_total counter\nbluelight_writer_long_steps_total {}",
        c.writer_longest_step_us.load(Ordering::Relaxed) as f64 / 1e6,
        c.writer_long_steps.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_ingest_accept_errors_total Failed accepts on device listeners (out of file descriptors, most often); each waits 100 ms.\n# TYPE bluelight_ingest_accept_errors_total counter\nbluelight_ingest_accept_errors_total {}",
        c.accept_errors.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_devices_refused_total Device connections refused: a failed TLS handshake (no client certificate, one from another CA, plaintext on a TLS listener) or a certificate no token maps.\n# TYPE bluelight_devices_refused_total counter\nbluelight_devices_refused_total {}",
        c.devices_refused.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_udp_dropped_total Fixes in UDP datagrams dropped for a full queue."
    );
    let _ = writeln!(m, "# TYPE bluelight_udp_dropped_total counter");
    let _ = writeln!(
        m,
        "bluelight_udp_dropped_total {}",
        c.udp_dropped.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_udp_refused_total UDP datagrams dropped for coming from outside ingest_allow.\n# TYPE bluelight_udp_refused_total counter\nbluelight_udp_refused_total {}",
        c.udp_refused.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_realtime_threads Threads at real-time priority (--realtime granted: the writer and each runtime worker).\n# TYPE bluelight_realtime_threads gauge\nbluelight_realtime_threads {}",
        bluelight_ingest::priority::realtime_threads()
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_writer_nice The engine writer's nice value as it runs (--writer-nice when the server may raise a thread, else the server's own; below the other threads' 0, it takes a core first).\n# TYPE bluelight_writer_nice gauge\nbluelight_writer_nice {}",
        bluelight_ingest::priority::writer_nice()
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_ws_sessions WebSocket sessions open.\n# TYPE bluelight_ws_sessions gauge\nbluelight_ws_sessions {}",
        s.sessions.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_ws_closed_slow_total Sessions closed with 1013 for not keeping up with alerts.\n# TYPE bluelight_ws_closed_slow_total counter\nbluelight_ws_closed_slow_total {}",
        s.hub.closed_slow.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_ws_closed_stalled_total Sessions closed with 1013 for taking no frame within the send timeout (tuning.ws_send_timeout_s).\n# TYPE bluelight_ws_closed_stalled_total counter\nbluelight_ws_closed_stalled_total {}",
        s.hub.closed_stalled.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_ws_subscriptions_refused_total Subscriptions refused (overloaded) because the session held max_subscriptions.\n# TYPE bluelight_ws_subscriptions_refused_total counter\nbluelight_ws_subscriptions_refused_total {}\n# HELP bluelight_ws_max_subscriptions Subscriptions one session may hold.\n# TYPE bluelight_ws_max_subscriptions gauge\nbluelight_ws_max_subscriptions {}",
        s.hub.subscriptions_refused.load(Ordering::Relaxed),
        s.max_subscriptions
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_positions_conflated_total Position changes superseded by a later change of the same unit before the feed flushed.\n# TYPE bluelight_positions_conflated_total counter\nbluelight_positions_conflated_total {}",
        s.hub.conflated.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_ingest_queue_batches Batches waiting for the engine's writer (the queue holds 256).\n# TYPE bluelight_ingest_queue_batches gauge\nbluelight_ingest_queue_batches {}",
        s.queue.queued()
    );
    let (queries, bulk) = s.tasks.queued();
    let _ = writeln!(
        m,
        "# HELP bluelight_writer_tasks_queued Queries (nearest, a feed's first picture) waiting for the engine's writer, and bulk tasks (feed copies, exports' reads) waiting or under way (each queue holds {}; the writer takes in as many bulk tasks again).\n# TYPE bluelight_writer_tasks_queued gauge\nbluelight_writer_tasks_queued{{kind=\"query\"}} {queries}\nbluelight_writer_tasks_queued{{kind=\"bulk\"}} {bulk}",
        s.tuning.task_queue
    );
    runtime_metrics(&mut m);
    let (queued, queued_max) = s.hub.queued_messages();
    let _ = writeln!(
        m,
        "# HELP bluelight_ws_queued_messages Messages waiting in WebSocket session queues, all sessions.\n# TYPE bluelight_ws_queued_messages gauge\nbluelight_ws_queued_messages {queued}"
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_ws_queued_messages_max The most messages one session has waiting (closed with 1013 at {}).\n# TYPE bluelight_ws_queued_messages_max gauge\nbluelight_ws_queued_messages_max {queued_max}",
        s.tuning.session_queue
    );
    let _ = writeln!(
        m,
        "# HELP bluelight_alert_subscriptions Alert subscriptions open.\n# TYPE bluelight_alert_subscriptions gauge\nbluelight_alert_subscriptions {}",
        s.hub.alert_subscriptions()
    );
    s.alert_latency.render(
        "bluelight_fix_to_alert_seconds",
        "Fix received to alert frame sent, per alert frame (live alerts; replays excluded).",
        &mut m,
    );
    s.nearest_latency.render(
        "bluelight_ws_nearest_seconds",
        "One-shot nearest over WebSocket: request frame read to reply frame sent.",
        &mut m,
    );
    let _ = writeln!(m, "# HELP bluelight_alerts_total Alerts fired, by event.");
    let _ = writeln!(m, "# TYPE bluelight_alerts_total counter");
    for (i, e) in ALERT_EVENTS.iter().enumerate() {
        let _ = writeln!(
            m,
            "bluelight_alerts_total{{event=\"{}\"}} {}",
            e.as_str(),
            s.hub.alerts_fired[i].load(Ordering::Relaxed)
        );
    }
    {
        let e = s.engine.lock();
        let k = e.counters();
        let _ = writeln!(
            m,
            "# HELP bluelight_units Units known.\n# TYPE bluelight_units gauge\nbluelight_units {}",
            e.unit_count()
        );
        let _ = writeln!(
            m,
            "# HELP bluelight_fences Fences.\n# TYPE bluelight_fences gauge\nbluelight_fences {}",
            e.fence_count()
        );
        let _ = writeln!(
            m,
            "# HELP bluelight_rules Proximity rules.\n# TYPE bluelight_rules gauge\nbluelight_rules {}",
            e.rule_count()
        );
        let _ = writeln!(
            m,
            "# HELP bluelight_engine_refreshes_total Fixes that left their cell's inscribed cap.\n# TYPE bluelight_engine_refreshes_total counter\nbluelight_engine_refreshes_total {}",
            k.refreshes
        );
        let _ = writeln!(
            m,
            "# HELP bluelight_engine_cell_changes_total Fixes that moved a unit to another cell.\n# TYPE bluelight_engine_cell_changes_total counter\nbluelight_engine_cell_changes_total {}",
            k.cell_changes
        );
        let _ = writeln!(
            m,
            "# HELP bluelight_engine_fixes_seen_total Fixes the writer has taken, accepted or refused.\n# TYPE bluelight_engine_fixes_seen_total counter\nbluelight_engine_fixes_seen_total {}",
            k.fixes_seen
        );
        let (live, slots) = e.region_counts();
        let _ = writeln!(
            m,
            "# HELP bluelight_engine_regions Regions live: fences, positions feeds' areas and standing-nearest zones.\n# TYPE bluelight_engine_regions gauge\nbluelight_engine_regions {live}"
        );
        let _ = writeln!(
            m,
            "# HELP bluelight_engine_region_slots Slots of the region table: about twice the most fences, or feeds and zones, alive at once (removed regions' ids are taken again).\n# TYPE bluelight_engine_region_slots gauge\nbluelight_engine_region_slots {slots}"
        );
        let _ = writeln!(
            m,
            "# HELP bluelight_engine_candidate_sets Candidate sets (the regions a cell may be in) interned: at most one per occupied cell, plus fewer than 4096 no cell holds, awaiting release.\n# TYPE bluelight_engine_candidate_sets gauge\nbluelight_engine_candidate_sets {}",
            e.candidate_sets()
        );
        let h = e.history_stats();
        let _ = writeln!(
            m,
            "# HELP bluelight_history_fixes Fixes held in history.\n# TYPE bluelight_history_fixes gauge\nbluelight_history_fixes {}",
            h.held
        );
        let _ = writeln!(
            m,
            "# HELP bluelight_history_dropped_total Fixes dropped from history at its cap.\n# TYPE bluelight_history_dropped_total counter\nbluelight_history_dropped_total {}",
            h.dropped_cap
        );
        limits(&s, e.config(), &mut m);
    }
    if let Some(r) = &s.redis {
        redis_metrics(&r.journal.status, &r.outbox, &mut m);
        if let Some(f) = &r.follower {
            let _ = writeln!(
                m,
                "# HELP bluelight_follower_lag_seconds How far this follower is behind the leader's journal (0 when it has applied everything).\n# TYPE bluelight_follower_lag_seconds gauge\nbluelight_follower_lag_seconds {}",
                f.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
            );
            let _ = writeln!(
                m,
                "# HELP bluelight_follower_reloads_total Snapshots this follower put in place of its engine (holes in the journal).\n# TYPE bluelight_follower_reloads_total counter\nbluelight_follower_reloads_total {}",
                f.reloads.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            m,
            "# HELP bluelight_leader 1 when this server takes writes.\n# TYPE bluelight_leader gauge\nbluelight_leader {}",
            u8::from(s.leading.load(Ordering::Relaxed))
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m).into_response()
}

/// The journal's and the outbox's state (with `--redis`).
/// Every bound the server keeps on a map, a queue or a buffer, by its
/// configuration key, so a dashboard sets each beside what it holds.
fn limits(s: &AppState, e: &bluelight_engine::EngineConfig, m: &mut String) {
    let t = &s.tuning;
    let _ = writeln!(
        m,
        "# HELP bluelight_limit Configured bounds, by configuration key (what each bounds: the gauge named in the README's Limits table).\n# TYPE bluelight_limit gauge"
    );
    let limits: [(&str, usize); 22] = [
        ("max_units", e.max_units),
        ("max_fences", e.max_fences),
        ("max_rules", e.max_rules),
        ("max_cover_cells", e.max_cover_cells),
        ("max_tags", bluelight_engine::MAX_TAGS),
        ("history_max_fixes", e.history_max_fixes),
        ("max_sessions", t.max_sessions),
        ("max_subscriptions", s.max_subscriptions),
        ("session_queue", t.session_queue),
        ("alert_ring", t.alert_ring),
        ("queue_batches", t.queue_batches),
        ("task_queue", t.task_queue),
        ("udp_hold_fixes", bluelight_ingest::transport::UDP_HOLD_MAX),
        ("http_max_connections", t.http_max_connections),
        ("device_max_connections", t.device_max_connections),
        ("http_max_body_bytes", t.http_max_body_bytes),
        ("ws_max_message_bytes", t.ws_max_message_bytes),
        ("ws_ingest_max_message_bytes", t.ws_ingest_max_message_bytes),
        ("device_max_frame_bytes", t.device_max_frame_bytes),
        ("journal_entry_bytes", t.journal_entry_bytes),
        ("journal_in_flight", t.journal_in_flight),
        ("alert_resume_max", t.alert_resume_max),
    ];
    for (name, v) in limits {
        let _ = writeln!(m, "bluelight_limit{{name=\"{name}\"}} {v}");
    }
    let _ = writeln!(
        m,
        "# HELP bluelight_ws_sessions_refused_total WebSocket upgrades refused (503) because max_sessions were open.\n# TYPE bluelight_ws_sessions_refused_total counter\nbluelight_ws_sessions_refused_total {}",
        s.hub.sessions_refused.load(Ordering::Relaxed)
    );
}

fn redis_metrics(j: &JournalStatus, o: &Outbox, m: &mut String) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let up = j.up.load(Ordering::Relaxed) && o.up.load(Ordering::Relaxed);
    for (name, kind, help, value) in [
        (
            "bluelight_redis_up",
            "gauge",
            "1 when the journal and the outbox have Redis, 0 while it is away.",
            u64::from(up),
        ),
        (
            "bluelight_journal_entries_total",
            "counter",
            "Journal entries appended.",
            load(&j.entries),
        ),
        (
            "bluelight_journal_bytes_total",
            "counter",
            "Bytes appended to the journal.",
            load(&j.bytes),
        ),
        (
            "bluelight_journal_failures_total",
            "counter",
            "Journal appends and snapshot writes Redis did not take.",
            load(&j.failures),
        ),
        (
            "bluelight_journal_unjournaled_commands_total",
            "counter",
            "Commands applied while Redis was away (a snapshot holds them once it is back).",
            load(&j.unjournaled_commands),
        ),
        (
            "bluelight_journal_not_acknowledged_total",
            "counter",
            "Writes answered 503 not journaled: Redis was away past the acknowledgement timeout.",
            load(&j.not_acknowledged),
        ),
        (
            "bluelight_snapshots_total",
            "counter",
            "Snapshots written to Redis.",
            load(&j.snapshots),
        ),
        (
            "bluelight_snapshot_bytes",
            "gauge",
            "Size of the latest snapshot.",
            load(&j.snapshot_bytes),
        ),
        (
            "bluelight_history_segment_bytes",
            "gauge",
            "Size of the history segment written with the latest snapshot (the fixes history took since the one before).",
            load(&j.history_segment_bytes),
        ),
        (
            "bluelight_snapshot_copy_microseconds",
            "gauge",
            "How long copying the state out for the latest snapshot held the writer.",
            load(&j.snapshot_copy_us),
        ),
        (
            "bluelight_snapshot_encode_microseconds",
            "gauge",
            "Encoding the latest snapshot, off the writer.",
            load(&j.snapshot_encode_us),
        ),
        (
            "bluelight_outbox_appended_seq",
            "gauge",
            "The highest alert seq the Redis alerts stream holds.",
            load(&o.appended_through),
        ),
        (
            "bluelight_outbox_dropped_total",
            "counter",
            "Alerts not sent to Redis because the outbox queue was full.",
            load(&o.dropped),
        ),
        (
            "bluelight_outbox_failures_total",
            "counter",
            "Outbox appends Redis did not take (retried).",
            load(&o.failures),
        ),
    ] {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// The async runtime's own figures: a runtime whose workers are busy all
/// the time, or whose global queue grows, delays every socket at once
/// (the writer's steps would not show it).
fn runtime_metrics(m: &mut String) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let rt = rt.metrics();
    let workers = rt.num_workers();
    let busy: f64 = (0..workers)
        .map(|w| rt.worker_total_busy_duration(w).as_secs_f64())
        .sum();
    let _ = writeln!(
        m,
        "# HELP bluelight_runtime_workers The async runtime's worker threads.\n# TYPE bluelight_runtime_workers gauge\nbluelight_runtime_workers {workers}\n# HELP bluelight_runtime_busy_seconds_total Time the runtime's workers spent running tasks, all workers together.\n# TYPE bluelight_runtime_busy_seconds_total counter\nbluelight_runtime_busy_seconds_total {busy:.6}\n# HELP bluelight_runtime_global_queue_tasks Tasks woken from outside the runtime and not yet run.\n# TYPE bluelight_runtime_global_queue_tasks gauge\nbluelight_runtime_global_queue_tasks {}\n# HELP bluelight_runtime_tasks Tasks alive in the runtime.\n# TYPE bluelight_runtime_tasks gauge\nbluelight_runtime_tasks {}",
        rt.global_queue_depth(),
        rt.num_alive_tasks()
    );
}
