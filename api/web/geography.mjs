// Writes the dispatch map's offline geography (run by api/build.rs):
// Natural Earth countries from the `world-atlas` package, converted from
// TopoJSON to GeoJSON with `topojson-client`. Polygons near Great Britain and
// Ireland come from the 1:10m data (coast detail a dispatcher can read at
// town zoom); the rest of the world from 1:110m, so a unit abroad or at sea
// still has land beside it without shipping megabytes.
//
// usage: node geography.mjs OUT_FILE
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { feature } from "topojson-client";

const require = createRequire(import.meta.url);
const atlas = name => JSON.parse(readFileSync(require.resolve(`world-atlas/${name}`), "utf8"));

// [west, south, east, north]: the British Isles and the seas around them.
const DETAIL = [-16, 47, 6, 63];

function bbox(ring) {
  let w = 180, s = 90, e = -180, n = -90;
  for (const [x, y] of ring) { w = Math.min(w, x); e = Math.max(e, x); s = Math.min(s, y); n = Math.max(n, y); }
  return [w, s, e, n];
}
// A ring across the antimeridian spans the globe in plain longitudes: never "near".
const meets = (b, r) => b[2] - b[0] < 180 && b[0] <= r[2] && b[2] >= r[0] && b[1] <= r[3] && b[3] >= r[1];
// Two decimals of a degree at 1:110m, four at 1:10m: the data's own precision.
const round = (k) => ([x, y]) => [Math.round(x * k) / k, Math.round(y * k) / k];

/** Each country's polygons that are (or are not) in the detail box. */
function pick(file, inside, k) {
  const fc = feature(atlas(file), atlas(file).objects.countries);
  const out = [];
  for (const f of fc.features) {
    if (!f.geometry) continue;
    const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
    const kept = polys
      .filter(p => meets(bbox(p[0]), DETAIL) === inside)
      .map(p => p.map(ring => ring.map(round(k))));
    if (kept.length) {
      out.push({ type: "Feature", properties: { name: f.properties.name },
                 geometry: { type: "MultiPolygon", coordinates: kept } });
    }
  }
  return { type: "FeatureCollection", features: out };
}

const out = process.argv[2];
if (!out) { console.error("usage: node geography.mjs OUT_FILE"); process.exit(2); }
const geography = {
  source: "Natural Earth (public domain) via world-atlas 2.0.2",
  detail_bbox: DETAIL,
  detail: pick("countries-10m.json", true, 1e4),
  world: pick("countries-110m.json", false, 1e2),
};
writeFileSync(out, JSON.stringify(geography));
