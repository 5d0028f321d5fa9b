//! The dispatch map page at `/` and its assets, all built into the binary
//! so the page works air-gapped: no request leaves the machine unless
//! `[map] tile_url` names the deployment's own tile server.
//!
//! The page's own code is `api/web/{index.html,map.js,map.css}`; Leaflet,
//! `h3-js` and the Natural Earth geography come from the npm packages
//! pinned by `api/web/package-lock.json` (see `api/build.rs`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::MapConfig;
use crate::state::AppState;

macro_rules! module_file {
    ($path:literal) => {
        include_bytes!(concat!(env!("BLUELIGHT_WEB_MODULES"), "/", $path))
    };
}

/// One built-in file: where it is served, its type and its bytes.
struct Asset {
    path: &'static str,
    /// What it is, for `/openapi.json`.
    what: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        what: "The dispatch map page",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/map/map.js",
        what: "The page's script",
        content_type: JS,
        body: include_bytes!("../web/map.js"),
    },
    Asset {
        path: "/map/map.css",
        what: "The page's style",
        content_type: CSS,
        body: include_bytes!("../web/map.css"),
    },
    Asset {
        path: "/map/leaflet.js",
        what: "Leaflet (the map library)",
        content_type: JS,
        body: module_file!("leaflet/dist/leaflet.js"),
    },
    Asset {
        path: "/map/leaflet.css",
        what: "Leaflet's style",
        content_type: CSS,
        body: module_file!("leaflet/dist/leaflet.css"),
    },
    Asset {
        path: "/map/h3.js",
        what: "h3-js (H3 cells in the browser)",
        content_type: JS,
        body: module_file!("h3-js/dist/h3-js.umd.js"),
    },
    Asset {
        path: "/map/geography.json",
        what: "Coast, land and borders (Natural Earth), for maps without a tile server",
        content_type: "application/json",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/geography.json")),
    },
    Asset {
        path: "/map/places.csv",
        what: "Towns for the map's labels",
        content_type: "text/csv; charset=utf-8",
        body: include_bytes!("../../data/places.csv"),
    },
];

/// The page and its assets, plus `/map/config.json` (what the page is
/// told about the deployment). None needs a token: they hold no data.
/// Each asset is documented as it is routed, from the same table.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    let mut r = OpenApiRouter::new().routes(routes!(config));
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
        r.get_openapi_mut()
            .paths
            .add_path_operation(a.path, vec![HttpMethod::Get], asset_doc(a));
    }
    r
}

/// An asset's entry in `/openapi.json`.
fn asset_doc(a: &Asset) -> Operation {
    let media = a.content_type.split(';').next().unwrap_or(a.content_type);
    let ok = ResponseBuilder::new()
        .description(a.what)
        .content(
            media,
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        )
        .build();
    OperationBuilder::new()
        .tag("map")
        .summary(Some(a.what))
        .response("200", ok)
        .build()
}

/// What the page is told about the deployment.
#[utoipa::path(get, path = "/map/config.json", tag = "map",
    responses((status = 200, description = "The map's tile server, if any", body = MapConfig)))]
async fn config(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(MapConfig {
        tile_url: s.map.tile_url.clone(),
        tile_attribution: s.map.tile_attribution.clone(),
    })
    .into_response()
}
