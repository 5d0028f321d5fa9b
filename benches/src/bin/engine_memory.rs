//! Live engine state per unit, measured at 1M units.
//!
//! `cargo run --release -p bluelight-benches --bin engine_memory [UNITS]`
//!
//! Builds the benchmark world (units with human ids and registered numeric
//! keys, spread over UK towns, each after a few fixes), with history off,
//! and reports heap bytes per unit counted by a counting allocator (live
//! allocations, exact), and the growth of resident memory from `/proc`
//! (which adds allocator overhead and free space the allocator keeps).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bluelight_benches::fixture::{World, WorldSpec};

/// Counts live heap bytes, delegating every call to the system allocator.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as `GlobalAlloc::alloc`, passed through.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as `GlobalAlloc::realloc`, passed through.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    let units: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    let mut world = World::with_history(
        WorldSpec {
            units,
            fences: 0,
            feeds: 0,
            seed: 7,
        },
        0,
    );
    eprintln!(
        "after build: {:.1} B/unit",
        (LIVE.load(Ordering::Relaxed) - heap0) as f64 / units as f64
    );
    // A few rounds of steady-state movement so cells churn as they would.
    let mut batch = Vec::new();
    let mut out = bluelight_engine::Outputs::default();
    for _ in 0..3 {
        for _ in 0..units.div_ceil(100_000) {
            world.next_fixes(100_000, &mut batch);
            out.clear();
            for (slot, fix) in &batch {
                world.engine.apply(*slot, fix, &mut out);
            }
        }
        eprintln!(
            "after a round: {:.1} B/unit",
            (LIVE.load(Ordering::Relaxed) - heap0) as f64 / units as f64
        );
    }
    // The world's own bookkeeping (movers and slots) is not engine state.
    let fixture = world.movers.capacity() * std::mem::size_of_val(&world.movers[0])
        + world.slots.capacity() * std::mem::size_of_val(&world.slots[0]);
    let heap = LIVE.load(Ordering::Relaxed) - heap0 - fixture;
    let rss = rss_bytes().saturating_sub(rss0).saturating_sub(fixture);
    println!("units:                {units}");
    println!("occupied fine cells:  {}", world.engine.occupied_cells());
    println!(
        "live heap per unit:   {:.1} bytes (counting allocator)",
        heap as f64 / units as f64
    );
    println!(
        "resident per unit:    {:.1} bytes (RSS growth)",
        rss as f64 / units as f64
    );
    println!("engine's own count, by part (bytes per unit):");
    for (part, bytes) in world.engine.memory_parts() {
        println!("  {part:<20} {:>6.1}", bytes as f64 / units as f64);
    }
}
