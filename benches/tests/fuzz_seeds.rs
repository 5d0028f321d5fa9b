//! Every committed seed and every crash a fuzzer found
//! (`benches/fuzz/seeds/<target>/`, `benches/fuzz/regressions/<target>/`)
//! run through its target's body: a finding once fixed stays fixed,
//! without libFuzzer.
//!
//! The bodies are the fuzz crate's own source, compiled here as a module:
//! the fuzz crate is a workspace of its own (cargo fuzz's layout), and
//! building it apart for this test cost CI almost three minutes.

#[path = "../fuzz/src/lib.rs"]
mod bluelight_fuzz;

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory").path();
            let data = std::fs::read(&path).expect("a readable input");
            body(&data);
            ran += 1;
        }
    }
    assert!(ran > 0, "no seeds for {target} under seeds/{target}/");
}

#[test]
fn fix_flatbuffers_seeds_and_regressions_pass() {
    replay("fix_flatbuffers", bluelight_fuzz::fix_flatbuffers);
}

#[test]
fn fix_json_seeds_and_regressions_pass() {
    replay("fix_json", bluelight_fuzz::fix_json);
}

#[test]
fn cot_xml_seeds_and_regressions_pass() {
    replay("cot_xml", bluelight_fuzz::cot_xml);
}

#[test]
fn tak_v1_seeds_and_regressions_pass() {
    replay("tak_v1", bluelight_fuzz::tak_v1);
}

#[test]
fn nmea_seeds_and_regressions_pass() {
    replay("nmea", bluelight_fuzz::nmea);
}

#[test]
fn lip_seeds_and_regressions_pass() {
    replay("lip", bluelight_fuzz::lip);
}

#[test]
fn ws_request_seeds_and_regressions_pass() {
    replay("ws_request", bluelight_fuzz::ws_request);
}

#[test]
fn definitions_seeds_and_regressions_pass() {
    replay("definitions", bluelight_fuzz::definitions);
}
