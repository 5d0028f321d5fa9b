//! Helpers shared by the engine tests.

use bluelight_engine::{Detect, Engine, EngineConfig, FenceSpec, Filter, Outputs, Shape};
use geo::{LineString, MultiPolygon, Polygon};

pub fn engine() -> Engine {
    Engine::new(EngineConfig::default()).expect("default config is valid")
}

pub fn square(lon0: f64, lat0: f64, lon1: f64, lat1: f64) -> Shape {
    let ring = LineString::from(vec![
        (lon0, lat0),
        (lon1, lat0),
        (lon1, lat1),
        (lon0, lat1),
        (lon0, lat0),
    ]);
    Shape::polygon(MultiPolygon(vec![Polygon::new(ring, vec![])])).expect("valid square")
}

pub fn fence(id: &str, shape: Shape) -> FenceSpec {
    FenceSpec {
        id: id.into(),
        shape,
        detect: Detect {
            enter: true,
            exit: true,
            dwell: true,
        },
        dwell_s: 60,
        hysteresis_m: 0.0,
        filter: Filter::all(),
        source: None,
    }
}

pub fn events(out: &Outputs) -> Vec<(String, String)> {
    out.alerts
        .iter()
        .map(|a| {
            (
                a.event.as_str().to_owned(),
                a.fence.as_deref().or(a.rule.as_deref()).unwrap_or("").to_owned(),
            )
        })
        .collect()
}
