//! Writes the seed inputs under `seeds/<target>/`: a few well-formed
//! messages of each kind, as devices and clients send them, for the
//! fuzzers to start from. Run from `benches/fuzz`:
//! `cargo run --example write_seeds`. The seeds are committed; this is how
//! they were made.

use std::path::Path;

use bluelight_engine::{Agency, Fix, Status};
use bluelight_fuzz::NOW_MS;
use bluelight_ingest::decode::{UnitInfoSpec, encode_flatbuffers};
use bluelight_ingest::lip::{PduWriter, ShortCodes};
use bluelight_ingest::nmea::with_checksum;
use bluelight_ingest::tak::{self, proto};

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    std::fs::create_dir_all(&dir).expect("the seeds folder can be made");
    std::fs::write(dir.join(name), data).expect("a seed can be written");
}

fn fix(t: i64, lat: f64, lon: f64) -> Fix {
    Fix {
        time_ms: t,
        lat,
        lon,
        accuracy_m: 5.0,
        speed_mps: 12.5,
        heading_deg: 270.0,
        status: Status::Available,
    }
}

fn flatbuffers() {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let units = [UnitInfoSpec {
        unit: 104,
        id: "AMB-104",
        agency: Agency::Ambulance,
        kind: "rrv",
        tags: &["paramedic"],
    }];
    let fixes = [
        (104, fix(NOW_MS - 2_000, 50.9097, -1.4044)),
        (104, fix(NOW_MS - 1_000, 50.9098, -1.4046)),
        (7, fix(NOW_MS - 1_000, -16.0, 179.99)),
    ];
    write(
        "fix_flatbuffers",
        "units_and_fixes",
        encode_flatbuffers(&mut fbb, "seed", &fixes, &units),
    );
    let unknown = Fix {
        accuracy_m: f32::NAN,
        speed_mps: f32::NAN,
        heading_deg: f32::NAN,
        status: Status::Unknown,
        ..fix(NOW_MS - 500, 89.99, 0.0)
    };
    write(
        "fix_flatbuffers",
        "unknowns_near_the_pole",
        encode_flatbuffers(&mut fbb, "", &[(1, unknown)], &[]),
    );
}

fn json() {
    let one = format!(
        r#"{{"fixes":[{{"id":"AMB-104","lat":50.9097,"lon":-1.4044,"time_ms":{},"speed_mps":12.5,"heading_deg":270,"accuracy_m":5,"agency":"ambulance","status":"available","kind":"rrv","tags":["paramedic"]}}]}}"#,
        NOW_MS - 1_000
    );
    write("fix_json", "one_unit", one.as_bytes());
    let many = format!(
        r#"{{"fixes":[{{"id":"P-1","lat":-16.0,"lon":179.999,"time_ms":{t}}},{{"id":"P-1","lat":-16.0,"lon":-179.999,"time_ms":{t2},"status":"emergency"}},{{"id":"C-9","lat":"x","lon":0,"time_ms":{t}}}]}}"#,
        t = NOW_MS - 2_000,
        t2 = NOW_MS - 1_000
    );
    write(
        "fix_json",
        "across_the_antimeridian_and_a_bad_one",
        many.as_bytes(),
    );
}

fn cot_event(uid: &str, kind: &str, lat: f64, lon: f64) -> String {
    let t = "2025-11-21T11:59:58.000Z";
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><event version="2.0" uid="{uid}" type="{kind}" how="m-g" time="{t}" start="{t}" stale="2025-11-21T12:02:00.000Z"><point lat="{lat}" lon="{lon}" hae="35" ce="9.9" le="999999"/><detail><contact callsign="ALPHA-1" endpoint="*:-1:stcp"/><__group name="Cyan" role="Team Member"/><track course="90" speed="12.5"/><takv device="Pixel" platform="ATAK-CIV" os="34" version="4.10"/></detail></event>"#
    )
}

fn cot() {
    write(
        "cot_xml",
        "atak_position",
        cot_event("ANDROID-1", "a-f-G-U-C", 51.5074, -0.1278).as_bytes(),
    );
    let stream = [
        cot_event("ANDROID-1", "a-f-G-U-C", 51.5074, -0.1278),
        cot_event("takPing", "t-x-c-t", 0.0, 0.0),
        r#"<event version="2.0" uid="protouid" type="t-x-takp-q" time="2025-11-21T11:59:58Z" start="2025-11-21T11:59:58Z" stale="2025-11-21T12:00:58Z" how="m-g"><point lat="0" lon="0" hae="0" ce="999999" le="999999"/><detail><TakControl><TakRequest version="1"/></TakControl></detail></event>"#.to_owned(),
        cot_event("ANDROID-2", "a-f-G-E-V", -16.0, 179.9999),
    ]
    .concat();
    write("cot_xml", "position_ping_request_position", stream.as_bytes());
}

fn tak_report(uid: &str, lat: f64, lon: f64) -> proto::TakMessage {
    let t = (NOW_MS - 2_000) as u64;
    proto::TakMessage {
        tak_control: None,
        cot_event: Some(proto::CotEvent {
            r#type: "a-f-G-U-C".into(),
            uid: uid.into(),
            send_time: t,
            start_time: t,
            stale_time: t + 120_000,
            how: "m-g".into(),
            lat,
            lon,
            hae: 35.0,
            ce: 9.9,
            le: 999_999.0,
            detail: Some(proto::Detail {
                contact: Some(proto::Contact {
                    endpoint: "*:-1:stcp".into(),
                    callsign: "ALPHA-1".into(),
                }),
                group: Some(proto::Group {
                    name: "Cyan".into(),
                    role: "Team Member".into(),
                }),
                track: Some(proto::Track {
                    speed: 12.5,
                    course: 90.0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn tak() {
    let mut out = Vec::new();
    tak::encode_stream(&tak_report("ANDROID-1", 51.5074, -0.1278), &mut out);
    tak::encode_stream(&tak_report("ANDROID-2", -16.0, -179.9999), &mut out);
    write("tak_v1", "stream_of_two", &out);
    out.clear();
    tak::encode_mesh(&tak_report("ANDROID-3", 89.9, 10.0), &mut out);
    write("tak_v1", "mesh_datagram", &out);
}

fn nmea() {
    let lines = [
        with_checksum("$PBLU,ID,BOAT-7"),
        with_checksum("$GPRMC,115958.00,A,5054.582,N,00124.264,W,12.5,270.0,211125,,,A"),
        with_checksum("$GPGGA,115958.00,5054.582,N,00124.264,W,1,08,0.9,35.0,M,47.0,M,,"),
        with_checksum("$GNRMC,115959.00,A,1600.000,S,17959.999,E,0.0,,211125,,,A"),
        "$GPRMC,115959.00,V,,,,,,,211125,,,N*53".to_owned(),
        "garbage".to_owned(),
    ];
    write(
        "nmea",
        "named_boat_rmc_gga",
        (lines.join("\r\n") + "\r\n").as_bytes(),
    );
}

fn lip() {
    let codes = ShortCodes {
        velocity: 40,
        direction: 4,
        ..ShortCodes::default()
    };
    write(
        "lip",
        "short_report",
        PduWriter::for_issi(0x12_34_56)
            .short_report(50.9097, -1.4044, codes)
            .bytes(),
    );
    write(
        "lip",
        "short_report_far_south_west",
        PduWriter::for_issi(1).short_report(-89.0, -179.9, codes).bytes(),
    );
    // A long report as the standard lays it out: time of position, circle
    // with altitude, velocity with direction.
    let mut w = PduWriter::for_issi(0x00_12_34);
    w.put(1, 2).put(3, 4);
    w.put(2, 2).put(21, 5).put(11, 5).put(59, 6).put(58, 6);
    w.put(5, 4)
        .position(-37.899131, 145.142012)
        .put(10, 6)
        .put(1 << 11 | 300, 12);
    w.put(5, 3).put(40, 7).put(64, 8);
    w.put(0, 1).put(0, 1).put(2, 8);
    write("lip", "long_report", w.bytes());
}

fn ws() {
    let requests = [
        (
            "bbox",
            r#"{"type":"subscribe","id":"s1","stream":"positions","area":{"bbox":[-1.5,50.8,-1.3,51.0]},"filter":{"agency":["police"],"status":["available"]},"max_hz":2}"#,
        ),
        (
            "circle",
            r#"{"type":"subscribe","stream":"positions","area":{"circle":{"center":[-1.4044,50.9097],"radius_m":5000}}}"#,
        ),
        (
            "polygon_across_the_antimeridian",
            r#"{"type":"subscribe","stream":"positions","area":{"polygon":{"type":"Polygon","coordinates":[[[179,-17],[-179,-17],[-179,-15],[179,-15],[179,-17]]]}}}"#,
        ),
        (
            "multipolygon_round_a_pole",
            r#"{"area":{"polygon":{"type":"MultiPolygon","coordinates":[[[[0,80],[120,80],[-120,80],[0,80]]]]}},"filter":{"tags":["x"],"max_age_s":60}}"#,
        ),
        (
            "h3_cells",
            r#"{"area":{"h3":["8a195da49b7ffff","85195da7fffffff"]},"filter":{"ids":["P0","P1"]}}"#,
        ),
        ("fence", r#"{"area":{"fence":"f"}}"#),
    ];
    for (name, r) in requests {
        write("ws_request", name, r.as_bytes());
    }
}

fn definitions() {
    let defs = [
        (
            "fence_polygon",
            r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[-1.5,50.8],[-1.3,50.8],[-1.3,51.0],[-1.5,51.0],[-1.5,50.8]]]},"properties":{"detect":["enter","exit","dwell"],"dwell_s":60,"hysteresis_m":20,"filter":{"agency":["police"]}}}"#,
        ),
        (
            "fence_circle",
            r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[179.99,-16.0]},"properties":{"radius_m":2500}}"#,
        ),
        (
            "fence_with_a_hole",
            r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]],[[0.2,0.2],[0.2,0.8],[0.8,0.8],[0.8,0.2],[0.2,0.2]]]},"properties":{}}"#,
        ),
        (
            "fence_round_the_north_pole",
            r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,89],[120,89],[-120,89],[0,89]]]},"properties":{}}"#,
        ),
        (
            "rule_proximity",
            r#"{"type":"proximity","from":{"agency":["police"]},"to":{"status":["emergency"]},"radius_m":500,"hysteresis_m":50}"#,
        ),
    ];
    for (name, d) in defs {
        write("definitions", name, d.as_bytes());
    }
}

fn main() {
    flatbuffers();
    json();
    cot();
    tak();
    nmea();
    lip();
    ws();
    definitions();
}
