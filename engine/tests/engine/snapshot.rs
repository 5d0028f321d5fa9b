//! Snapshot bytes from elsewhere: damaged stored cells, the older format.

use bluelight_engine::{Engine, EngineConfig, Fix, Outputs};
use h3o::{LatLng, Resolution};

const T0: i64 = 1_763_726_400_000;

/// An engine of one unit "U" and the byte offset of its stored fine cell.
fn one_unit() -> (Engine, Vec<u8>, usize, u64) {
    let mut e = Engine::new(EngineConfig::default()).expect("engine");
    let u = e.intern_unit("U");
    e.apply(u, &Fix::at(T0, 51.5, -0.12), &mut Outputs::default());
    let cell = u64::from(LatLng::new(51.5, -0.12).expect("ll").to_cell(Resolution::Nine));
    let bytes = e.snapshot();
    let at = bytes
        .windows(8)
        .position(|w| w == cell.to_le_bytes())
        .expect("the unit's cell is stored");
    (e, bytes, at, cell)
}

#[test]
fn a_stored_cell_that_does_not_hold_the_unit_is_looked_up_again() {
    let (e, mut bytes, at, cell) = one_unit();
    let cell = h3o::CellIndex::try_from(cell).expect("cell");
    let neighbour = cell
        .grid_disk::<Vec<_>>(1)
        .into_iter()
        .find(|&c| c != cell)
        .expect("a neighbour");
    bytes[at..at + 8].copy_from_slice(&u64::from(neighbour).to_le_bytes());
    let back = Engine::restore(EngineConfig::default(), &bytes).expect("restores");
    let u = back.find_unit("U").expect("U");
    assert_eq!(back.unit_cell(u), Some(cell), "placed in the cell that holds it");
    assert_eq!(back.snapshot(), e.snapshot());
    // Not a cell at all, or one of another resolution: looked up too.
    for bad in [
        0u64,
        u64::MAX,
        u64::from(cell.parent(Resolution::Five).expect("parent")),
    ] {
        bytes[at..at + 8].copy_from_slice(&bad.to_le_bytes());
        let back = Engine::restore(EngineConfig::default(), &bytes).expect("restores");
        assert_eq!(back.unit_cell(u), Some(cell), "stored {bad:x}");
    }
}

#[test]
fn a_snapshot_of_the_previous_format_still_restores() {
    let (e, bytes, at, _) = one_unit();
    // BLSNAP03: without the details section (its count, 0, is the last
    // four bytes).
    let mut v3 = bytes[..bytes.len() - 4].to_vec();
    v3[..8].copy_from_slice(b"BLSNAP03");
    let back = Engine::restore(EngineConfig::default(), &v3).expect("restores");
    assert_eq!(back.snapshot(), e.snapshot());
    // BLSNAP02: nor the units' cells.
    let mut old = v3[..at].to_vec();
    old.extend_from_slice(&v3[at + 8..]);
    old[..8].copy_from_slice(b"BLSNAP02");
    let back = Engine::restore(EngineConfig::default(), &old).expect("restores");
    assert_eq!(back.snapshot(), e.snapshot());
    old[..8].copy_from_slice(b"BLSNAP09");
    assert!(Engine::restore(EngineConfig::default(), &old).is_err());
}

#[test]
fn callsigns_how_and_stale_times_survive_a_snapshot() {
    let mut e = Engine::new(EngineConfig::default()).expect("engine");
    let mut out = Outputs::default();
    let a = e.intern_unit("ANDROID-1");
    let b = e.intern_unit("PLAIN");
    e.apply(a, &Fix::at(T0, 51.5, -0.12), &mut out);
    e.apply(b, &Fix::at(T0, 51.6, -0.12), &mut out);
    e.set_details(a, Some("ALPHA-1"), Some("m-g"), Some(T0 + 30_000));
    let back = Engine::restore(EngineConfig::default(), &e.snapshot()).expect("restores");
    assert_eq!(back.snapshot(), e.snapshot());
    let v = back
        .unit_view(back.find_unit("ANDROID-1").expect("a"))
        .expect("view");
    assert_eq!(
        (v.callsign.as_deref(), v.how.as_deref()),
        (Some("ALPHA-1"), Some("m-g"))
    );
    let plain = back.unit_view(back.find_unit("PLAIN").expect("b")).expect("view");
    assert_eq!((plain.callsign, plain.how), (None, None));
    // The stale time came back too: past it, the unit is stale long
    // before stale_after (120 s).
    let mut back = back;
    let mut out = Outputs::default();
    back.tick(T0 + 31_000, &mut out);
    assert_eq!(out.alerts.len(), 1);
    assert!(
        back.unit_view(back.find_unit("ANDROID-1").expect("a"))
            .is_some_and(|v| v.stale)
    );
    // Emptied, the details go, and the snapshot is the plain one again.
    e.set_details(a, Some(""), Some(""), None);
    let v = e.unit_view(a).expect("view");
    assert_eq!((v.callsign, v.how), (None, None));
}
