//! A CAD system reading bluelight's alerts from Redis with a consumer
//! group: every alert at least once, across restarts of either side.
//!
//! ```sh
//! cargo run -p bluelight-api --example cad_alerts -- redis://127.0.0.1:6379/0
//! cargo run -p bluelight-api --example cad_alerts -- redis://127.0.0.1:6379/0 cad desk-2 bluelight:
//! ```
//!
//! Arguments: the Redis URL, the group (default `cad`), this reader's name
//! in it (default `desk-1`), the server's key prefix (default `bluelight:`).
//! The group is created at the start of the stream if it does not exist.
//! On start the reader first takes back what it was given but never
//! acknowledged (it stopped mid-way), then reads new alerts; each is
//! acknowledged (`XACK`) only after it was handled, so a crash between the
//! two sees it again: handle alerts idempotently, by `seq`.

use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{Commands, RedisResult};

fn main() -> RedisResult<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let group = args.next().unwrap_or_else(|| "cad".into());
    let me = args.next().unwrap_or_else(|| "desk-1".into());
    let prefix = args.next().unwrap_or_else(|| "bluelight:".into());
    let key = format!("{prefix}alerts");
    let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
    // From the stream's start: alerts the server wrote before this group
    // existed are read too. BUSYGROUP: it exists already.
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg(&group)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut conn);
    if let Err(e) = created
        && e.code() != Some("BUSYGROUP")
    {
        return Err(e);
    }
    eprintln!("reading {key} as {me} in group {group}");
    // "0": what this reader was given and did not acknowledge; then ">": new.
    let mut from = "0";
    loop {
        let opts = StreamReadOptions::default()
            .group(&group, &me)
            .count(100)
            .block(5_000);
        let reply: StreamReadReply = conn.xread_options(&[&key], &[from], &opts)?;
        let entries: Vec<_> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
        if entries.is_empty() {
            // Nothing pending is left: from now on, only new alerts.
            from = ">";
            continue;
        }
        for e in entries {
            let seq: u64 = e.get("seq").unwrap_or_default();
            let alert: String = e.get("alert").unwrap_or_default();
            // Handle it: here, print it. A real CAD system raises an
            // incident, keyed by seq so a redelivery changes nothing.
            println!("{seq} {alert}");
            let _: u64 = conn.xack(&key, &group, &[&e.id])?;
        }
    }
}
