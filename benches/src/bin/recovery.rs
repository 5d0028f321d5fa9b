//! Recovery after a crash: a snapshot of 1M units, then 10M fixes
//! journaled after it, replayed the way `bluelight serve --redis` starts.
//!
//! `cargo run --release -p bluelight-benches --bin recovery [UNITS] [FIXES] [FENCES] [FEEDS]`
//!
//! Starts its own `redis-server` (append-only file, fsync every second),
//! writes the snapshot and the journal as the server's journal stage
//! does (entries of about 5,000 fixes), then times
//! `bluelight_ingest::journal::replay::recover`: the snapshot's load and
//! restore, and the replay of every entry through the writer's applier
//! with the benchmark world's 1,000 polygon fences.

use std::sync::Arc;
use std::time::Instant;

use bluelight_benches::fixture::{World, WorldSpec};
use bluelight_benches::loadgen::journal::RedisProcess;
use bluelight_engine::{EngineConfig, Fix, UnitSlot};
use bluelight_ingest::batch::{IngestBatch, UnitRef};
use bluelight_ingest::journal::replay::recover;
use bluelight_ingest::journal::{Keys, codec};
use bluelight_ingest::queue::Command;
use bluelight_ingest::validate::{IngestCounters, ValidationConfig};
use bluelight_ingest::writer::{Applier, Discard};

/// Fixes in one journal entry (about 230 KB, as the stage makes them).
const PER_ENTRY: usize = 5_000;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let units: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let fixes: usize = args.next().map_or(Ok(10_000_000), |a| a.parse())?;
    let fences: usize = args.next().map_or(Ok(1_000), |a| a.parse())?;
    let feeds: usize = args.next().map_or(Ok(0), |a| a.parse())?;
    eprintln!("recovery: building {units} units and {fences} fences");
    let mut world = World::with_history(
        WorldSpec {
            units,
            fences,
            feeds,
            seed: 11,
        },
        0,
    );
    let redis = RedisProcess::start()?;
    let client = redis::Client::open(redis.url())?;
    let mut sync = client.get_connection()?;
    let keys = Keys::new("bluelight:");
    let frozen = world.engine.freeze();
    let held_ms = frozen.took().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let snapshot = frozen.encode();
    let encode_s = t.elapsed().as_secs_f64();
    eprintln!(
        "recovery: a snapshot holds the writer {held_ms:.1} ms (the copy), then encodes in {:.0} ms off it",
        encode_s * 1000.0
    );
    redis::cmd("SET")
        .arg(&keys.snapshot_engine)
        .arg(&snapshot)
        .query::<()>(&mut sync)?;
    redis::cmd("HSET")
        .arg(&keys.snapshot)
        .arg("next")
        .arg(1)
        .query::<()>(&mut sync)?;
    eprintln!(
        "recovery: snapshot {:.1} MiB (encoded in {encode_s:.2} s); journaling {fixes} fixes",
        snapshot.len() as f64 / 1048576.0
    );
    let slots_to_keys: Vec<u64> = (0..units as u64).collect();
    let mut batch: Vec<(UnitSlot, Fix)> = Vec::with_capacity(PER_ENTRY);
    let mut bytes = Vec::new();
    let mut pipe = redis::pipe();
    let mut journal_bytes = 0usize;
    let entries = fixes.div_ceil(PER_ENTRY);
    for n in 1..=entries {
        world.next_fixes(PER_ENTRY.min(fixes - (n - 1) * PER_ENTRY), &mut batch);
        let mut b = IngestBatch::default();
        for (slot, fix) in &batch {
            b.fixes.push((UnitRef::Key(slots_to_keys[slot.index()]), *fix));
        }
        codec::encode([&Command::Fixes(b)], &mut bytes);
        journal_bytes += bytes.len();
        pipe.cmd("XADD")
            .arg(&keys.journal)
            .arg(format!("{n}-0"))
            .arg("c")
            .arg(&bytes)
            .arg("t")
            .arg(0)
            .ignore();
        if n % 50 == 0 || n == entries {
            pipe.query::<()>(&mut sync)?;
            pipe.clear();
        }
    }
    drop(world);
    let t = Instant::now();
    let restored = bluelight_engine::Engine::restore(EngineConfig::default(), &snapshot)?;
    eprintln!(
        "recovery: the snapshot alone restores in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    drop(restored);
    eprintln!(
        "recovery: journal of {entries} entries, {:.0} MiB; recovering",
        journal_bytes as f64 / 1048576.0
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (took, r) = rt.block_on(async {
        let mut conn = redis::aio::ConnectionManager::new(client).await?;
        let mut applier = Applier::new(
            Arc::new(ValidationConfig::default()),
            Arc::new(IngestCounters::default()),
            256,
        );
        let t = Instant::now();
        let r = recover(
            &mut conn,
            &keys,
            EngineConfig::default(),
            &mut applier,
            &Discard,
            true,
        )
        .await?;
        anyhow::Ok((t.elapsed(), r))
    })?;
    anyhow::ensure!(
        r.entries as usize == entries,
        "replayed {} of {entries} entries",
        r.entries
    );
    anyhow::ensure!(
        r.engine.unit_count() == units,
        "{} units recovered",
        r.engine.unit_count()
    );
    println!(
        "| {units} units, {fences} fences, snapshot {snap:.0} MiB | {fixes} fixes in {entries} entries ({jmib:.0} MiB) | {secs:.2} s | {rate:.0} fixes/s |",
        snap = snapshot.len() as f64 / 1048576.0,
        jmib = journal_bytes as f64 / 1048576.0,
        secs = took.as_secs_f64(),
        rate = fixes as f64 / took.as_secs_f64(),
    );
    Ok(())
}
