//! A dispatch map's feed in binary: subscribes to positions with
//! `"encoding":"flatbuffers"` and prints what each frame says.
//!
//! ```sh
//! cargo run --release -- demo &      # or any running server
//! cargo run -p bluelight-api --example binary_map -- ws://127.0.0.1:9600/v1/ws -1.6,50.8,-1.2,51.0
//! ```
//!
//! Arguments: the WebSocket URL (default `ws://127.0.0.1:9600/v1/ws`) and a
//! bbox `w,s,e,n` (default: the whole world). A token, if the server wants
//! one, comes from `BLUELIGHT_TOKEN`. `snapshot` and `positions` arrive as
//! binary frames, one `Positions` table each (`data/schema/positions.fbs`);
//! `subscribed`, `left` and errors stay JSON text. A client in another
//! language generates its reader from the same schema with `flatc`.

use bluelight_ingest::wire::feed;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9600/v1/ws".into());
    let bbox: Vec<f64> = args
        .next()
        .unwrap_or_else(|| "-180,-90,180,90".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let mut request = url.into_client_request()?;
    if let Ok(token) = std::env::var("BLUELIGHT_TOKEN") {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let subscribe = serde_json::json!({
        "type": "subscribe", "id": "map", "stream": "positions",
        "area": {"bbox": bbox}, "max_hz": 1, "encoding": "flatbuffers",
    });
    ws.send(Message::Text(subscribe.to_string().into())).await?;
    while let Some(frame) = ws.next().await {
        match frame? {
            Message::Binary(b) => {
                // Verified: a buffer off a socket is checked before it is read.
                let p = feed::root_as_positions(&b)?;
                let (positions, units) = (p.positions().unwrap_or_default(), p.units().unwrap_or_default());
                println!(
                    "{:?} {}: {} units in {} bytes",
                    p.kind(),
                    p.sub().unwrap_or_default(),
                    units.len(),
                    b.len()
                );
                for (pos, unit) in positions.iter().zip(units.iter()).take(3) {
                    println!(
                        "  {} {:.5},{:.5} {:?} {:?} at {} ms{}",
                        unit.id(),
                        pos.lat(),
                        pos.lon(),
                        pos.agency(),
                        pos.status(),
                        pos.time_ms(),
                        if pos.speed_mps().is_nan() {
                            String::new()
                        } else {
                            format!(", {:.1} m/s", pos.speed_mps())
                        }
                    );
                }
            }
            Message::Text(t) => println!("{t}"),
            Message::Close(c) => {
                println!("closed: {c:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
