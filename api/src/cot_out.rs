//! CoT out (PROTOCOL.md "CoT out"): the live picture to TAK clients, so
//! responders with ATAK see every unit bluelight tracks.
//!
//! With `cot_out`, every `--cot-tcp` connection also receives the picture
//! (XML, or TAK protocol v1 for a connection that spoke it): every unit
//! when it connects, then each unit whose fix or status changed, at most
//! once a second. `--tak-out HOST:PORT` pushes the same picture to a TAK
//! Server as a client, reconnecting with backoff.
//!
//! Like a dispatch map, it is a reader of the engine and never writes to
//! it: once a second the changed units are copied out on the writer a step
//! at a time (bulk work), encoded once on a low-priority thread, and
//! broadcast to every client; a client too slow for the broadcast is
//! given the whole picture again rather than a gap.
//!
//! Each unit is an event with `uid` = its id, `how="m-g"`, `stale` = its
//! time plus `stale_after`, `type` from [`cot_type`], `<contact callsign>`
//! (its callsign, or its id), its agency as the team colour (`<__group>`),
//! `<track>` when speed and heading are known, and its agency and status
//! in `<remarks>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bluelight_engine::{Agency, Engine, Fix, Status, UnitSlot};
use bluelight_ingest::cot::format_rfc3339_ms;
use bluelight_ingest::tak::{self, proto};
use bluelight_ingest::tasks::WriterTasks;
use bluelight_ingest::tls::{ALL_AGENCIES, DeviceGrant};
use bluelight_ingest::transport::{CotFrame, CotOutlet, CotSender, cot_channel};
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, oneshot};

/// Units copied out of the engine per bulk step on the writer.
const COPY_STEP: usize = 20_000;

/// Pictures a client may fall behind before it is sent the whole picture
/// again.
const BROADCAST_DEPTH: usize = 8;

/// The CoT type of a unit: the table in the README ("CoT out").
///
/// A kind that is already a CoT type (`a-f-G-U-C`, a unit that reported
/// over CoT) is kept; aircraft are air tracks, boats sea-surface tracks,
/// vehicles ground equipment, and everyone else a ground unit. All are
/// friendly (`a-f`).
pub fn cot_type(agency: Agency, kind: Option<&str>) -> &str {
    let kind = kind.unwrap_or_default();
    if kind.starts_with("a-") && !kind.contains(char::is_whitespace) {
        return kind;
    }
    let k = kind.to_ascii_lowercase();
    let is = |words: &[&str]| words.iter().any(|w| k.contains(w));
    if is(&["helicopter", "aircraft", "plane", "drone", "uav"]) {
        "a-f-A"
    } else if is(&["boat", "vessel", "ship", "lifeboat", "rib"])
        || (agency == Agency::Coastguard && k.is_empty())
    {
        "a-f-S"
    } else if is(&[
        "car",
        "van",
        "rrv",
        "ambulance",
        "engine",
        "appliance",
        "truck",
        "vehicle",
        "motorcycle",
        "bike",
    ]) {
        "a-f-G-E-V"
    } else {
        "a-f-G-U-C"
    }
}

/// The TAK team colour of an agency (`<__group name>`), so each agency has
/// its own colour on an ATAK map.
pub fn team_colour(agency: Agency) -> &'static str {
    match agency {
        Agency::Police => "Blue",
        Agency::Fire => "Red",
        Agency::Ambulance => "Green",
        Agency::Coastguard => "Orange",
        Agency::Other => "White",
    }
}

/// One unit as CoT out sends it, copied out of the engine on the writer.
#[derive(Debug, Clone)]
struct CotUnit {
    id: String,
    callsign: Option<String>,
    kind: Option<String>,
    agency: Agency,
    status: Status,
    fix: Fix,
    stale_ms: i64,
}

/// One agency's units of a [`Picture`], encoded once both ways.
#[derive(Debug, Default)]
pub struct Part {
    /// XML events, each after its XML declaration and a newline (as TAK
    /// servers stream them).
    pub xml: Arc<[u8]>,
    /// TAK protocol v1 messages in the streaming framing.
    pub v1: Arc<[u8]>,
    /// Units in it.
    pub units: usize,
}

/// Each second's changes (or a whole picture), one part an agency
/// (indexed by `Agency as usize`): a client limited to some agencies is
/// sent their parts, and every client shares the same bytes.
#[derive(Debug, Default)]
pub struct Picture {
    /// The parts.
    pub parts: [Part; Agency::ALL.len()],
}

/// CoT out: the picture and the clients it goes to.
pub struct CotOut {
    tasks: WriterTasks,
    picture: broadcast::Sender<Arc<Picture>>,
    /// Only loopback clients get the picture (tokens configured, and no
    /// TLS to say who a device is: PROTOCOL.md lets nothing else see the
    /// units a token would limit).
    loopback_only: bool,
    /// `--tak-out HOST:PORT`: the TAK Server the leader pushes the picture
    /// to (a follower does not, so the server is sent one picture).
    tak_out: Option<String>,
    /// Clients being sent the picture.
    pub clients: AtomicU64,
    /// Units sent, all clients together.
    pub units_sent: AtomicU64,
}

impl std::fmt::Debug for CotOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CotOut")
            .field("loopback_only", &self.loopback_only)
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

impl CotOut {
    /// CoT out reading the engine through `tasks`, pushing to `tak_out`
    /// once [`CotOut::lead`] is called.
    pub fn new(tasks: WriterTasks, loopback_only: bool, tak_out: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            tasks,
            picture: broadcast::channel(BROADCAST_DEPTH).0,
            loopback_only,
            tak_out,
            clients: AtomicU64::new(0),
            units_sent: AtomicU64::new(0),
        })
    }

    /// The outlet the `--cot-tcp` listener hands its connections to.
    pub fn outlet(self: &Arc<Self>) -> Arc<dyn CotOutlet> {
        Arc::new(Outlet(self.clone()))
    }

    /// Makes and broadcasts each second's changes while anyone listens.
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = Vec::new();
        loop {
            every.tick().await;
            if self.picture.receiver_count() == 0 {
                continue;
            }
            let Some((units, back)) = self.copy(Some(std::mem::take(&mut sent))).await else {
                continue;
            };
            sent = back;
            if units.is_empty() {
                continue;
            }
            if let Some(p) = encode(units).await {
                let _ = self.picture.send(Arc::new(p));
            }
        }
    }

    /// Copies units out on the writer, a step at a time: with `sent` (the
    /// (time, status) last sent of each slot), only those changed since,
    /// and `sent` comes back updated; without, every unit.
    async fn copy(&self, sent: Option<Vec<(i64, u8)>>) -> Option<(Vec<CotUnit>, Vec<(i64, u8)>)> {
        let (tx, rx) = oneshot::channel();
        let slot = self.tasks.bulk_slot()?;
        let whole = sent.is_none();
        let mut sent = sent.unwrap_or_default();
        let mut units = Vec::new();
        let mut next = 0usize;
        let mut tx = Some(tx);
        slot.run(move |e: &mut Engine| {
            let end = (next + COPY_STEP).min(e.unit_count());
            for i in next..end {
                let slot = UnitSlot(i as u32);
                let Some(u) = e.unit_borrowed(slot) else {
                    continue;
                };
                if !whole {
                    if sent.len() <= i {
                        sent.resize(i + 1, (i64::MIN, u8::MAX));
                    }
                    let now = (u.fix.time_ms, u.status as u8);
                    if sent[i] == now {
                        continue;
                    }
                    sent[i] = now;
                }
                units.push(CotUnit {
                    id: u.id.to_owned(),
                    callsign: u.callsign.map(str::to_owned),
                    kind: u.kind.map(str::to_owned),
                    agency: u.agency,
                    status: u.status,
                    fix: u.fix,
                    stale_ms: u.fix.time_ms.saturating_add(e.config().stale_after_ms(u.agency)),
                });
            }
            next = end;
            if end < e.unit_count() {
                return false;
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send((std::mem::take(&mut units), std::mem::take(&mut sent)));
            }
            true
        });
        rx.await.ok()
    }

    /// Sends the picture of the agencies in `mask` to one client until it
    /// goes: the whole picture, then each second's changes; the whole
    /// picture again if it fell behind. The client's writer sends each in
    /// the encoding it speaks.
    async fn serve(self: Arc<Self>, send: CotSender, mask: u8) {
        self.clients.fetch_add(1, Ordering::Relaxed);
        let mut changes = self.picture.subscribe();
        'whole: loop {
            let Some((units, _)) = self.copy(None).await else {
                // The writer is busy: try again shortly.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let Some(whole) = encode(units).await else {
                break;
            };
            if self.send(&send, &whole, mask).await.is_err() {
                break;
            }
            loop {
                match changes.recv().await {
                    Ok(p) => {
                        if self.send(&send, &p, mask).await.is_err() {
                            break 'whole;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'whole,
                    Err(broadcast::error::RecvError::Closed) => break 'whole,
                }
            }
        }
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// Queues the parts of `p` in `mask` for a client; an error once its
    /// writer has stopped (it took nothing for `COT_SEND_TIMEOUT`, or went).
    async fn send(&self, send: &CotSender, p: &Picture, mask: u8) -> Result<(), ()> {
        for (i, part) in p.parts.iter().enumerate() {
            if part.units == 0 || mask & (1 << i) == 0 {
                continue;
            }
            let frame = CotFrame {
                xml: part.xml.clone(),
                v1: part.v1.clone(),
                then_v1: false,
            };
            send.send(frame).await.map_err(|_| ())?;
            self.units_sent.fetch_add(part.units as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Starts pushing to `--tak-out`, if given: when this server starts
    /// as the leader, or when it is promoted.
    pub fn lead(self: &Arc<Self>) {
        if let Some(server) = &self.tak_out {
            tokio::spawn(self.clone().push_to(server.clone()));
        }
    }

    /// `--tak-out HOST:PORT`: pushes the picture to a TAK Server as a
    /// client (XML, as every TAK Server takes), reconnecting with backoff
    /// (1 s doubling to 30 s). What the server sends back is read and
    /// dropped: it is not ingested, so two servers cannot echo each other.
    async fn push_to(self: Arc<Self>, server: String) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&server)).await
            {
                Ok(Ok(stream)) => {
                    tracing::info!(%server, "tak-out: connected; sending the live picture");
                    backoff = Duration::from_secs(1);
                    let (mut read, write) = stream.into_split();
                    let drain = tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
                    });
                    // A TAK Server takes XML from every client.
                    let (send, _stopped) = cot_channel(write, Arc::new(AtomicBool::new(false)));
                    self.clone().serve(send, ALL_AGENCIES).await;
                    drain.abort();
                    tracing::warn!(%server, "tak-out: connection lost; reconnecting");
                }
                Ok(Err(e)) => tracing::warn!(%server, error = %e, "tak-out: cannot connect; retrying"),
                Err(_) => tracing::warn!(%server, "tak-out: connect timed out; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

/// The `--cot-tcp` listener's outlet.
struct Outlet(Arc<CotOut>);

impl CotOutlet for Outlet {
    fn attach(&self, send: CotSender, peer: SocketAddr, grant: &DeviceGrant) -> bool {
        let mask = if grant.certified {
            grant.picture
        } else {
            (!self.0.loopback_only || peer.ip().is_loopback()).then_some(ALL_AGENCIES)
        };
        let Some(mask) = mask else {
            tracing::debug!(%peer, who = %grant.name, "cot out: not sent (a non-loopback client without a certificate, or a token without read)");
            return false;
        };
        tokio::spawn(self.0.clone().serve(send, mask));
        true
    }
}

/// Encodes units both ways, on a low-priority thread (formatting a
/// national picture takes a while, and must not hold a runtime worker).
async fn encode(units: Vec<CotUnit>) -> Option<Picture> {
    tokio::task::spawn_blocking(move || {
        bluelight_ingest::priority::lower_this_thread();
        let mut parts: [(String, Vec<u8>, usize); Agency::ALL.len()] = Default::default();
        for u in &units {
            let (text, v1, n) = &mut parts[u.agency as usize];
            write_xml(u, text);
            tak::encode_stream(&v1_message(u), v1);
            *n += 1;
        }
        Picture {
            parts: parts.map(|(text, v1, units)| Part {
                xml: text.into_bytes().into(),
                v1: v1.into(),
                units,
            }),
        }
    })
    .await
    .ok()
}

fn remarks(u: &CotUnit) -> String {
    format!("{} {}", u.agency.as_str(), u.status.as_str())
}

fn write_xml(u: &CotUnit, out: &mut String) {
    use quick_xml::escape::escape;
    use std::fmt::Write as _;
    let (mut time, mut stale) = (String::new(), String::new());
    format_rfc3339_ms(u.fix.time_ms, &mut time);
    format_rfc3339_ms(u.stale_ms, &mut stale);
    let ce = if u.fix.accuracy_m.is_finite() {
        f64::from(u.fix.accuracy_m)
    } else {
        9_999_999.0
    };
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<event version=\"2.0\" uid=\"{}\" type=\"{}\" how=\"m-g\" time=\"{time}\" start=\"{time}\" stale=\"{stale}\"><point lat=\"{}\" lon=\"{}\" hae=\"9999999.0\" ce=\"{ce}\" le=\"9999999.0\"/><detail><contact callsign=\"{}\"/><__group name=\"{}\" role=\"Team Member\"/>",
        escape(u.id.as_str()),
        escape(cot_type(u.agency, u.kind.as_deref())),
        u.fix.lat,
        u.fix.lon,
        escape(u.callsign.as_deref().unwrap_or(&u.id)),
        team_colour(u.agency),
    );
    if u.fix.speed_mps.is_finite() && u.fix.heading_deg.is_finite() {
        let _ = write!(
            out,
            "<track course=\"{}\" speed=\"{}\"/>",
            u.fix.heading_deg, u.fix.speed_mps
        );
    }
    let _ = write!(
        out,
        "<remarks>{}</remarks></detail></event>",
        escape(remarks(u).as_str())
    );
}

fn v1_message(u: &CotUnit) -> proto::TakMessage {
    let ms = |t: i64| u64::try_from(t).unwrap_or(0);
    let known = |v: f32| v.is_finite().then_some(f64::from(v));
    proto::TakMessage {
        tak_control: None,
        cot_event: Some(proto::CotEvent {
            r#type: cot_type(u.agency, u.kind.as_deref()).to_owned(),
            uid: u.id.clone(),
            send_time: ms(u.fix.time_ms),
            start_time: ms(u.fix.time_ms),
            stale_time: ms(u.stale_ms),
            how: "m-g".into(),
            lat: u.fix.lat,
            lon: u.fix.lon,
            hae: 999_999.0,
            ce: known(u.fix.accuracy_m).unwrap_or(999_999.0),
            le: 999_999.0,
            detail: Some(proto::Detail {
                xml_detail: format!(
                    "<remarks>{}</remarks>",
                    quick_xml::escape::escape(remarks(u).as_str())
                ),
                contact: Some(proto::Contact {
                    endpoint: String::new(),
                    callsign: u.callsign.clone().unwrap_or_else(|| u.id.clone()),
                }),
                group: Some(proto::Group {
                    name: team_colour(u.agency).into(),
                    role: "Team Member".into(),
                }),
                track: known(u.fix.speed_mps)
                    .zip(known(u.fix.heading_deg))
                    .map(|(speed, course)| proto::Track { speed, course }),
            }),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_table() {
        assert_eq!(cot_type(Agency::Police, Some("a-f-G-U-C-I")), "a-f-G-U-C-I");
        assert_eq!(cot_type(Agency::Ambulance, Some("rrv")), "a-f-G-E-V");
        assert_eq!(cot_type(Agency::Police, Some("Helicopter")), "a-f-A");
        assert_eq!(cot_type(Agency::Coastguard, Some("lifeboat")), "a-f-S");
        assert_eq!(cot_type(Agency::Coastguard, None), "a-f-S");
        assert_eq!(cot_type(Agency::Fire, Some("officer")), "a-f-G-U-C");
        assert_eq!(cot_type(Agency::Other, None), "a-f-G-U-C");
    }

    #[test]
    fn an_xml_event_reads_back_as_the_unit() {
        let u = CotUnit {
            id: "AMB-<104>".into(),
            callsign: Some("Medic & 1".into()),
            kind: Some("rrv".into()),
            agency: Agency::Ambulance,
            status: Status::Emergency,
            fix: Fix {
                speed_mps: 12.5,
                heading_deg: 270.0,
                accuracy_m: 5.0,
                ..Fix::at(1_796_040_000_000, 50.9097, -1.4044)
            },
            stale_ms: 1_796_040_120_000,
        };
        let mut text = String::new();
        write_xml(&u, &mut text);
        let mut out = bluelight_ingest::batch::IngestBatch::default();
        let v = bluelight_ingest::validate::ValidationConfig::default();
        let xml = text.split_once('\n').map_or("", |x| x.1);
        bluelight_ingest::cot::decode_cot(xml, 0, &v, 1_796_040_000_000, &mut out)
            .expect("our own XML reads");
        let (_, fix) = out.fixes[0];
        assert_eq!(
            (fix.lat, fix.lon, fix.time_ms),
            (50.9097, -1.4044, 1_796_040_000_000)
        );
        assert_eq!(
            (fix.speed_mps, fix.heading_deg, fix.accuracy_m),
            (12.5, 270.0, 5.0)
        );
        let m = &out.metas[0];
        let text_of = |r: &Option<std::ops::Range<u32>>| r.as_ref().map(|r| out.str(r).to_owned());
        assert_eq!(text_of(&m.callsign).as_deref(), Some("Medic & 1"));
        assert_eq!(text_of(&m.kind).as_deref(), Some("a-f-G-E-V"));
        assert_eq!(m.stale_at_ms, Some(1_796_040_120_000));
        assert!(
            matches!(&out.fixes[0].0, bluelight_ingest::batch::UnitRef::Id(r) if out.str(r) == "AMB-<104>")
        );
    }
}
