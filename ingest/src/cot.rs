//! Cursor-on-Target: TAK clients' XML `<event>`s as fixes.
//!
//! Each `<event>` with a `<point>` is a fix for unit `uid`: `time` (else
//! `start`) is the device time; `<point lat lon ce>` the position and its
//! accuracy (`ce` 9999999 means unknown); `<detail><track course speed>` the
//! heading and speed; the CoT `type` becomes the unit's kind. On TCP the
//! stream is split on `</event>`.

use bluelight_engine::{Fix, Status};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use thiserror::Error;

use crate::batch::{IngestBatch, MetaUpdate, UnitRef};
use crate::validate::ValidationConfig;

/// Why a CoT event was refused.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CotError {
    /// Not well-formed XML.
    #[error("CoT XML: {0}")]
    Xml(String),
    /// No `<event>` element.
    #[error("CoT: no <event> element")]
    NoEvent,
    /// A required attribute is missing or unreadable.
    #[error("CoT: attribute {0} missing or invalid")]
    Attribute(&'static str),
}

/// TAK protocol v1's "unknown" for `ce`, `le` and `hae` (XML uses
/// 9999999): anything from it up is unknown.
const COT_UNKNOWN_V1: f64 = 999_999.0;

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// One CoT event's fields that bluelight keeps, whichever encoding it came
/// in (XML, or TAK protocol version 1).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CotEvent<'a> {
    /// `uid`: the unit.
    pub uid: &'a str,
    /// `type` (`a-f-G-U-C`): the unit's kind.
    pub kind: &'a str,
    /// `how` (`m-g`: machine, GPS; `h-e`: human, estimated).
    pub how: &'a str,
    /// `time` (else `start`), ms since the epoch.
    pub time_ms: Option<i64>,
    /// `stale`, ms since the epoch.
    pub stale_ms: Option<i64>,
    /// `<point lat lon>`.
    pub lat: Option<f64>,
    /// `<point lat lon>`.
    pub lon: Option<f64>,
    /// `<point ce>`: circular error, metres (9999999 or 999999: unknown).
    pub ce: Option<f64>,
    /// `<track course>`, degrees.
    pub course: Option<f64>,
    /// `<track speed>`, metres a second.
    pub speed: Option<f64>,
    /// `<contact callsign>`.
    pub callsign: &'a str,
    /// `<__group name>`: the team colour.
    pub group: &'a str,
    /// `<TakControl><TakRequest version="1"/>`: a client asking to speak
    /// TAK protocol version 1 (in a `t-x-takp-q` event).
    pub asks_v1: bool,
}

/// A TAK control message (type `t-x-…`): nothing of where anyone is, but
/// something the listener may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `t-x-c-t`: a client's keep-alive, which a server answers with
    /// `t-x-c-t-r`.
    Ping,
    /// `t-x-takp-q` asking for TAK protocol version 1.
    AskV1,
    /// Any other (a request for another version, ...).
    Other,
}

/// What one event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A position report: a fix (or, failing validation, an entry in
    /// the batch's errors).
    Position,
    /// A TAK control message: nothing added to the batch.
    Control(Control),
    /// An event that is not a unit's position (a map marker `b-m-p-…`, a
    /// chat message `b-t-f`, a drawing `u-d-…`): passed over, counted as
    /// ignored.
    NotAUnit,
}

/// Decodes one `<event>` (with or without an XML declaration) into `out`.
/// A valid event adds one fix; an event that fails validation is recorded in
/// `out.errors` with `index`.
///
/// # Errors
/// XML that is not a CoT event with a position.
pub fn decode_cot(
    xml: &str,
    index: u32,
    v: &ValidationConfig,
    now_ms: i64,
    out: &mut IngestBatch,
) -> Result<Decoded, CotError> {
    let mut reader = Reader::from_str(xml);
    let (mut uid, mut kind, mut how, mut time, mut stale) = (None, None, None, None, None);
    let (mut lat, mut lon, mut ce) = (None, None, None);
    let (mut course, mut speed, mut callsign, mut group) = (None, None, None, None);
    let mut asks_v1 = false;
    let mut seen_event = false;
    let number = |s: Option<String>| s.and_then(|s| s.parse::<f64>().ok());
    loop {
        match reader.read_event().map_err(|e| CotError::Xml(e.to_string()))? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "event" => {
                    seen_event = true;
                    uid = attr(&e, "uid");
                    kind = attr(&e, "type");
                    how = attr(&e, "how");
                    time = attr(&e, "time").or_else(|| attr(&e, "start"));
                    stale = attr(&e, "stale");
                }
                "point" => {
                    lat = number(attr(&e, "lat"));
                    lon = number(attr(&e, "lon"));
                    ce = number(attr(&e, "ce"));
                }
                "track" => {
                    course = number(attr(&e, "course"));
                    speed = number(attr(&e, "speed"));
                }
                "contact" => callsign = attr(&e, "callsign"),
                "__group" => group = attr(&e, "name"),
                "TakRequest" => asks_v1 = attr(&e, "version").as_deref() == Some("1"),
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == "event" => break,
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_event {
        return Err(CotError::NoEvent);
    }
    let event = CotEvent {
        uid: uid.as_deref().unwrap_or_default(),
        kind: kind.as_deref().unwrap_or_default(),
        how: how.as_deref().unwrap_or_default(),
        time_ms: Some(
            time.as_deref()
                .and_then(parse_rfc3339_ms)
                .ok_or(CotError::Attribute("time"))?,
        ),
        stale_ms: stale.as_deref().and_then(parse_rfc3339_ms),
        lat,
        lon,
        ce,
        course,
        speed,
        callsign: callsign.as_deref().unwrap_or_default(),
        group: group.as_deref().unwrap_or_default(),
        asks_v1,
    };
    push_event(&event, index, v, now_ms, out)
}

/// Puts a decoded event into `out`: a fix for unit `uid` (or, failing
/// validation, an entry in `out.errors`), and what the event says of the
/// unit: its kind (`type`), callsign, `how`, team (as the tag
/// `group:<name>`) and stale time. TAK control messages (type `t-x-…`)
/// and events of types other than atoms (`a-…`) are passed over, adding
/// nothing.
///
/// # Errors
/// An event without a uid, a time or a position.
pub fn push_event(
    event: &CotEvent<'_>,
    index: u32,
    v: &ValidationConfig,
    now_ms: i64,
    out: &mut IngestBatch,
) -> Result<Decoded, CotError> {
    // TAK's own control messages (`t-x-…`: pings, protocol negotiation)
    // say nothing of where anyone is: an ATAK ping's point is 0,0 with
    // unknown error, and would be a phantom unit at Null Island.
    if event.kind.starts_with("t-x-") {
        return Ok(Decoded::Control(match event.kind {
            "t-x-c-t" => Control::Ping,
            "t-x-takp-q" if event.asks_v1 => Control::AskV1,
            _ => Control::Other,
        }));
    }
    // Only atoms (`a-…`: friendly, hostile, ... ground units, aircraft,
    // vessels) are things that move and report. A marker a dispatcher
    // drops on an ATAK map, or a GeoChat message (whose uid is new every
    // message), would otherwise become a "unit" that nearest offers for an
    // incident. An event with no type is taken as a unit, as before.
    if !event.kind.is_empty() && event.kind.split('-').next() != Some("a") {
        return Ok(Decoded::NotAUnit);
    }
    if event.uid.is_empty() {
        return Err(CotError::Attribute("uid"));
    }
    let time_ms = event.time_ms.ok_or(CotError::Attribute("time"))?;
    let lat = event.lat.ok_or(CotError::Attribute("point lat"))?;
    let lon = event.lon.ok_or(CotError::Attribute("point lon"))?;
    // CoT's "unknown" is 9999999 in XML and 999999 in TAK protocol v1.
    let known = |x: Option<f64>, unknown: f64| {
        x.filter(|v| *v < unknown && *v >= 0.0)
            .map_or(f32::NAN, |v| v as f32)
    };
    let mut fix = Fix {
        time_ms,
        lat,
        lon,
        accuracy_m: known(event.ce, COT_UNKNOWN_V1),
        speed_mps: known(event.speed, f64::INFINITY),
        heading_deg: known(event.course, f64::INFINITY),
        status: Status::Unknown,
    };
    if let Err(r) = v.check(&fix, now_ms) {
        out.errors.push((index, r));
        return Ok(Decoded::Position);
    }
    out.measurements_cleared += fix.clear_out_of_range();
    let id = out.push_text(event.uid);
    let text = |out: &mut IngestBatch, s: &str| (!s.is_empty()).then(|| out.push_text(s));
    let kind = text(out, event.kind);
    let callsign = text(out, event.callsign);
    let how = text(out, event.how);
    // The team (`<__group name>`) as the unit's tag `group:<name>`, so
    // feeds and queries can filter on it.
    let tags = (!event.group.is_empty()).then(|| {
        let tag = out.push_text_parts(&["group:", event.group]);
        out.tag_ranges.push(tag);
        out.tag_ranges.len() as u32 - 1..out.tag_ranges.len() as u32
    });
    out.metas.push(MetaUpdate {
        unit: UnitRef::Id(id.clone()),
        key: None,
        agency: None,
        kind,
        tags,
        callsign,
        how,
        stale_at_ms: event.stale_ms,
    });
    out.fixes.push((UnitRef::Id(id), fix));
    out.index.push(index);
    Ok(Decoded::Position)
}

/// Milliseconds since the epoch of an RFC 3339 time (`2025-11-21T10:15:30.123Z`
/// or with a `±hh:mm` offset). Hand-written for this one format rather than
/// a date crate.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = digits.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = crate::calendar::days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

/// An RFC 3339 UTC time with milliseconds (`2025-11-21T10:15:30.123Z`),
/// as CoT writes its times: the inverse of [`parse_rfc3339_ms`].
pub fn format_rfc3339_ms(ms: i64, out: &mut String) {
    use std::fmt::Write as _;
    let (y, mo, d) = crate::calendar::civil_from_days(ms.div_euclid(crate::calendar::DAY_MS));
    let t = ms.rem_euclid(crate::calendar::DAY_MS);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3_600_000,
        t / 60_000 % 60,
        t / 1000 % 60,
        t % 1000
    );
}

/// Splits a CoT stream buffer into complete events: calls `f` for each
/// `...</event>` and returns how many bytes were consumed (the rest is an
/// incomplete event to keep for the next read).
pub fn split_events(buf: &[u8], mut f: impl FnMut(&[u8])) -> usize {
    const END: &[u8] = b"</event>";
    let mut start = 0;
    while let Some(pos) = buf[start..].windows(END.len()).position(|w| w == END) {
        let end = start + pos + END.len();
        f(&buf[start..end]);
        start = end;
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_763_720_130_123;

    /// Shaped like an ATAK position report.
    const ATAK: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><event version="2.0" uid="ANDROID-358d6b2c6a1e4b1f" type="a-f-G-U-C" how="m-g" time="2025-11-21T10:15:30.123Z" start="2025-11-21T10:15:30.123Z" stale="2025-11-21T10:21:30.123Z"><point lat="51.5074" lon="-0.1278" hae="35.2" ce="9.9" le="9999999.0"/><detail><takv os="34" version="4.10.0.57" device="SAMSUNG SM-G991B" platform="ATAK-CIV"/><contact callsign="ALPHA-1" endpoint="*:-1:stcp"/><uid Droid="ALPHA-1"/><__group name="Cyan" role="Team Member"/><status battery="88"/><track course="270.5" speed="12.3"/></detail></event>"#;

    /// Shaped like a WinTAK report with an offset time and no track.
    const WINTAK: &str = r#"<event version="2.0" uid="WINTAK-7" type="a-f-G-E-V-A" how="h-e" time="2025-11-21T11:15:30+01:00" start="2025-11-21T11:15:30+01:00" stale="2025-11-21T11:20:30+01:00"><point lat="50.9097" lon="-1.4044" hae="9999999.0" ce="9999999.0" le="9999999.0"/><detail><contact callsign="AMB-104"/></detail></event>"#;

    #[test]
    fn rfc3339_times_parse_to_epoch_milliseconds() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2025-11-21T10:15:30.123Z"),
            Some(1_763_720_130_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-11-21T11:15:30+01:00"),
            Some(1_763_720_130_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T00:00:00.5Z"),
            Some(1_709_164_800_500)
        );
        assert_eq!(parse_rfc3339_ms("2025-13-01T00:00:00Z"), None);
        let mut text = String::new();
        format_rfc3339_ms(1_763_720_130_123, &mut text);
        assert_eq!(text, "2025-11-21T10:15:30.123Z");
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn atak_and_wintak_events_become_fixes() {
        let mut out = IngestBatch::default();
        let v = ValidationConfig::default();
        decode_cot(ATAK, 0, &v, NOW, &mut out).expect("atak");
        decode_cot(WINTAK, 1, &v, NOW, &mut out).expect("wintak");
        assert_eq!(out.fixes.len(), 2);
        let (u, f) = &out.fixes[0];
        assert!(matches!(u, UnitRef::Id(r) if out.str(r) == "ANDROID-358d6b2c6a1e4b1f"));
        assert_eq!((f.lat, f.lon, f.time_ms), (51.5074, -0.1278, 1_763_720_130_123));
        assert_eq!((f.accuracy_m, f.speed_mps, f.heading_deg), (9.9, 12.3, 270.5));
        let (_, w) = &out.fixes[1];
        assert!(w.accuracy_m.is_nan(), "ce 9999999 is unknown");
        assert_eq!(w.time_ms, 1_763_720_130_000);
        let kinds: Vec<&str> = out
            .metas
            .iter()
            .filter_map(|m| m.kind.as_ref())
            .map(|k| out.str(k))
            .collect();
        assert_eq!(kinds, vec!["a-f-G-U-C", "a-f-G-E-V-A"]);
        let m = &out.metas[0];
        let text = |r: &Option<std::ops::Range<u32>>| r.as_ref().map(|r| out.str(r).to_owned());
        assert_eq!(text(&m.callsign).as_deref(), Some("ALPHA-1"));
        assert_eq!(text(&m.how).as_deref(), Some("m-g"));
        assert_eq!(m.stale_at_ms, Some(1_763_720_490_123));
        let tags: Vec<&str> = m.tags.as_ref().map(|t| out.tags(t).collect()).unwrap_or_default();
        assert_eq!(tags, vec!["group:Cyan"]);
        let w = &out.metas[1];
        assert_eq!(text(&w.callsign).as_deref(), Some("AMB-104"));
        assert_eq!(w.tags, None, "no team: the unit's tags are left as they are");
    }

    /// Regression: an ATAK ping (as ATAK and pytak send it) became a unit
    /// "…-ping" at 0,0.
    #[test]
    fn tak_control_messages_are_passed_over() {
        let v = ValidationConfig::default();
        let ping = r#"<event version="2.0" uid="ANDROID-1-ping" type="t-x-c-t" how="h-g-i-g-o" time="2025-11-21T10:15:30Z" start="2025-11-21T10:15:30Z" stale="2025-11-21T10:15:50Z"><point lat="0.0" lon="0.0" hae="0.0" ce="9999999.0" le="9999999.0"/><detail/></event>"#;
        let ask = r#"<event version="2.0" uid="protouid" type="t-x-takp-q" how="m-g" time="2025-11-21T10:15:30Z" start="2025-11-21T10:15:30Z" stale="2025-11-21T10:16:30Z"><point lat="0.0" lon="0.0" hae="0.0" ce="999999" le="999999"/><detail><TakControl><TakRequest version="1"/></TakControl></detail></event>"#;
        for (xml, what) in [(ping, Control::Ping), (ask, Control::AskV1)] {
            let mut out = IngestBatch::default();
            assert_eq!(decode_cot(xml, 0, &v, NOW, &mut out), Ok(Decoded::Control(what)));
            assert!(out.fixes.is_empty() && out.errors.is_empty() && out.metas.is_empty());
        }
    }

    /// Regression: a marker dropped on an ATAK map, and every GeoChat
    /// message (a new uid each), became a unit that nearest could offer.
    #[test]
    fn markers_chat_and_drawings_are_not_units() {
        let v = ValidationConfig::default();
        let marker = r#"<event version="2.0" uid="9f1c-marker" type="b-m-p-s-m" how="h-g-i-g-o" time="2025-11-21T10:15:30Z" start="2025-11-21T10:15:30Z" stale="2026-11-21T10:15:30Z"><point lat="51.5" lon="-0.12" hae="0" ce="9999999" le="9999999"/><detail><contact callsign="RV point"/></detail></event>"#;
        let chat = r#"<event version="2.0" uid="GeoChat.ANDROID-1.All Chat Rooms.5a1e" type="b-t-f" how="h-g-i-g-o" time="2025-11-21T10:15:30Z" start="2025-11-21T10:15:30Z" stale="2025-11-22T10:15:30Z"><point lat="51.5" lon="-0.12" hae="0" ce="9999999" le="9999999"/><detail><__chat chatroom="All Chat Rooms"/><remarks>on scene</remarks></detail></event>"#;
        let drawing = r#"<event version="2.0" uid="c0rd0n" type="u-d-f" how="h-e" time="2025-11-21T10:15:30Z" start="2025-11-21T10:15:30Z" stale="2025-11-22T10:15:30Z"><point lat="51.5" lon="-0.12" hae="0" ce="9999999" le="9999999"/></event>"#;
        for xml in [marker, chat, drawing] {
            let mut out = IngestBatch::default();
            assert_eq!(
                decode_cot(xml, 0, &v, NOW, &mut out),
                Ok(Decoded::NotAUnit),
                "{xml}"
            );
            assert!(out.fixes.is_empty() && out.errors.is_empty() && out.metas.is_empty());
        }
        // A unit's own report beside them is still a unit.
        let mut out = IngestBatch::default();
        assert_eq!(decode_cot(ATAK, 0, &v, NOW, &mut out), Ok(Decoded::Position));
        assert_eq!(out.fixes.len(), 1);
    }

    #[test]
    fn events_without_position_or_uid_are_refused_by_name() {
        let v = ValidationConfig::default();
        let no_point = r#"<event uid="x" type="a-f-G-U-C" time="2025-11-21T10:15:30Z"/>"#;
        assert_eq!(
            decode_cot(no_point, 0, &v, NOW, &mut IngestBatch::default()),
            Err(CotError::Attribute("point lat"))
        );
        let no_uid = r#"<event type="a" time="2025-11-21T10:15:30Z"><point lat="1" lon="1"/></event>"#;
        assert_eq!(
            decode_cot(no_uid, 0, &v, NOW, &mut IngestBatch::default()),
            Err(CotError::Attribute("uid"))
        );
        assert_eq!(
            decode_cot("<nope/>", 0, &v, NOW, &mut IngestBatch::default()),
            Err(CotError::NoEvent)
        );
    }

    #[test]
    fn stream_splits_on_event_end_and_keeps_the_partial_tail() {
        let stream = format!("{ATAK}{WINTAK}<event uid=\"partial\"");
        let mut n = 0;
        let used = split_events(stream.as_bytes(), |_| n += 1);
        assert_eq!(n, 2);
        assert_eq!(&stream[used..], "<event uid=\"partial\"");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        #[test]
        fn random_and_mutated_xml_never_panics(cut in any::<usize>(), junk in ".{0,12}", text in ".{0,200}") {
            let at = ATAK.char_indices().nth(cut % ATAK.chars().count()).map_or(0, |(i, _)| i);
            let mutated = format!("{}{}{}", &ATAK[..at], junk, &ATAK[at..]);
            let _ = decode_cot(&mutated, 0, &ValidationConfig::default(), NOW, &mut IngestBatch::default());
            let _ = decode_cot(&text, 0, &ValidationConfig::default(), NOW, &mut IngestBatch::default());
            let _ = parse_rfc3339_ms(&text);
        }
    }
}
