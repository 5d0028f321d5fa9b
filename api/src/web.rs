//! The dispatch map page at `/` and its assets, all built into the binary
//! so the page works air-gapped: no request leaves the machine unless
//! `[map] tile_url` names the deployment's own tile server.
//!
//! The page's own code is `api/web/{index.html,map.js,map.css}`; Leaflet,
//! `h3-js` and the Natural Earth geography come from the npm packages
//! pinned by `api/web/package-lock.json` (see `api/build.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;

macro_rules! module_file {
    ($path:literal) => {
        include_bytes!(concat!(env!("BLUELIGHT_WEB_MODULES"), "/", $path))
    };
}

/// One built-in file: where it is served, its type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/map/map.js",
        content_type: JS,
        body: include_bytes!("../web/map.js"),
    },
    Asset {
        path: "/map/map.css",
        content_type: CSS,
        body: include_bytes!("../web/map.css"),
    },
    Asset {
        path: "/map/leaflet.js",
        content_type: JS,
        body: module_file!("leaflet/dist/leaflet.js"),
    },
    Asset {
        path: "/map/leaflet.css",
        content_type: CSS,
        body: module_file!("leaflet/dist/leaflet.css"),
    },
    Asset {
        path: "/map/h3.js",
        content_type: JS,
        body: module_file!("h3-js/dist/h3-js.umd.js"),
    },
    Asset {
        path: "/map/geography.json",
        content_type: "application/json",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/geography.json")),
    },
    Asset {
        path: "/map/places.csv",
        content_type: "text/csv; charset=utf-8",
        body: include_bytes!("../../data/places.csv"),
    },
];

/// The page and its assets, plus `/map/config.json` (what the page is
/// told about the deployment). None needs a token: they hold no data.
pub fn routes() -> Router<Arc<AppState>> {
    let mut r = Router::new().route("/map/config.json", get(config));
    for a in ASSETS {
        r = r.route(
            a.path,
            get(move || async move {
                // Revalidated on every load: a server upgrade is seen at once.
                (
                    [
                        (header::CONTENT_TYPE, a.content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    a.body,
                )
                    .into_response()
            }),
        );
    }
    r
}

async fn config(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "tile_url": s.map.tile_url,
        "tile_attribution": s.map.tile_attribution,
    }))
    .into_response()
}
