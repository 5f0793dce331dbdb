// Maps for the console: Leaflet over the London borough outlines (the base layer, no tile
// server needed), an optional operator tile layer, and helpers that draw tagwatch shapes.
// Every label made from server data goes through textContent (never HTML strings): Leaflet
// would put a string tooltip into innerHTML.

/* global L */

const LONDON = [51.507, -0.1278];
let boroughsPromise = null;
let configPromise = null;

/** The console settings (`tile_url`), fetched once. */
function config() {
  configPromise ??= fetch('/console/config.json').then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
  return configPromise;
}

/** The borough FeatureCollection, fetched once per sign-in with `api`. */
export function boroughs(api) {
  boroughsPromise ??= api('GET', '/v1/geodata/boroughs').catch((e) => {
    boroughsPromise = null;
    throw e;
  });
  return boroughsPromise;
}

export function forgetBoroughs() {
  boroughsPromise = null;
}

/** A DOM label for tooltips and popups. */
export function label(...lines) {
  const el = document.createElement('div');
  lines.forEach((line) => {
    const row = document.createElement('div');
    row.textContent = String(line);
    el.append(row);
  });
  return el;
}

/**
 * A map in `el` with the borough base layer. Returns `{map, layer, fit}`: `layer` holds what
 * the page draws; `fit()` zooms to it (or to London when it is empty).
 */
export async function makeMap(el, api) {
  const map = L.map(el, { center: LONDON, zoom: 10, attributionControl: true });
  map.attributionControl.setPrefix('Leaflet');
  const cfg = await config();
  if (cfg.tile_url) {
    L.tileLayer(cfg.tile_url, { maxZoom: 19 }).addTo(map);
  }
  try {
    const fc = await boroughs(api);
    L.geoJSON(fc, {
      style: { color: '#7a8794', weight: 1, fillColor: '#eef1f4', fillOpacity: cfg.tile_url ? 0 : 0.6 },
      interactive: false,
    }).addTo(map);
  } catch (e) {
    // the map still works without the outlines; say so on the map itself
    el.dataset.boroughs = 'unavailable';
  }
  const layer = L.featureGroup().addTo(map);
  const fit = () => {
    const b = layer.getBounds();
    // no animation: the view is final as soon as fit() returns (screenshots, tests)
    if (b.isValid()) map.fitBounds(b, { padding: [24, 24], maxZoom: 16, animate: false });
    else map.setView(LONDON, 10, { animate: false });
  };
  return { map, layer, fit };
}

export const ZONE_STYLE = {
  exclusion: { color: '#c0392b', weight: 2, fillOpacity: 0.15 },
  inclusion: { color: '#1f7a4d', weight: 2, fillOpacity: 0.12 },
};

/**
 * A Leaflet layer for a tagwatch geometry: a Circle as a circle, Polygon/MultiPolygon as
 * GeoJSON, a Borough by its outline from the borough layer.
 */
export async function geometryLayer(api, geometry, style) {
  if (!geometry || typeof geometry !== 'object') return null;
  if (geometry.type === 'Circle' && Array.isArray(geometry.center)) {
    const [lon, lat] = geometry.center;
    return L.circle([lat, lon], { radius: geometry.radius_m, className: 'tw-zone', ...style });
  }
  if (geometry.type === 'Borough') {
    const fc = await boroughs(api).catch(() => null);
    const f = fc?.features?.find((x) => x.properties?.name === geometry.name);
    return f ? L.geoJSON(f, { style: { className: 'tw-zone', ...style } }) : null;
  }
  if (geometry.type === 'Polygon' || geometry.type === 'MultiPolygon') {
    return L.geoJSON(geometry, { style: { className: 'tw-zone', ...style } });
  }
  return null;
}

/** A fix as a small circle marker plus its accuracy circle. */
export function fixMarker(lat, lon, accuracyM, color, text, className = 'tw-fix') {
  const group = L.featureGroup();
  if (accuracyM > 0) {
    L.circle([lat, lon], { radius: accuracyM, color, weight: 1, fillOpacity: 0.08, interactive: false }).addTo(group);
  }
  const m = L.circleMarker([lat, lon], { radius: 6, color: '#222', weight: 1, fillColor: color, fillOpacity: 0.9, className });
  if (text) m.bindTooltip(label(...text));
  m.addTo(group);
  return group;
}
