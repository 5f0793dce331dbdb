//! Zone geometry: the serde input type, its validation, and the resolved [`Shape`].
//!
//! Input is GeoJSON `Polygon` / `MultiPolygon` (lon/lat, holes allowed), a circle
//! `{"type":"Circle","center":[lon,lat],"radius_m":R}`, or a London borough by name
//! `{"type":"Borough","name":"Camden"}`. [`GeometryInput::resolve`] validates it once, at the
//! edge, into a [`Shape`] that the engine trusts.
//!
//! Invariants of a resolved [`Shape`]:
//! - every coordinate is finite, lat ∈ [-90, 90], lon ∈ [-180, 180];
//! - every ring is closed and has at least 4 positions;
//! - user-drawn polygons pass `geo::Validation` (no self-intersection, holes inside their
//!   shell, components of a multipolygon do not overlap), so the even-odd rule over all rings
//!   decides containment. Borough outlines come from the shipped, trusted boundary file and
//!   get the structural checks only (real survey outlines often self-touch at a vertex,
//!   which does not change even-odd containment);
//! - no polygon spans 180° or more of longitude (zones never cross the antimeridian);
//! - a circle's radius is in (0, [`MAX_RADIUS_M`]].
//!
//! Output: the API should store and return the *input* as given (so a borough zone still
//! reads `{"type":"Borough","name":"Camden"}`); [`Shape::to_geojson`] gives the resolved
//! outline for drawing on a map.

use std::collections::BTreeMap;

use geo::{Coord, LineString, MultiPolygon, Polygon, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::geodesy::LatLon;

/// Largest accepted circle radius. No exclusion zone or curfew address is bigger than a
/// borough; anything past 100 km is a unit mistake (km typed as m, or m as mm).
pub const MAX_RADIUS_M: f64 = 100_000.0;

/// Why a geometry was refused, in words an officer can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid geometry: {reason}")]
pub struct InvalidGeometry {
    pub reason: String,
}

impl InvalidGeometry {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// A GeoJSON position: `[lon, lat]` or `[lon, lat, altitude]` (altitude ignored).
pub type Position = Vec<f64>;

/// Zone geometry as posted by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum GeometryInput {
    Polygon {
        coordinates: Vec<Vec<Position>>,
    },
    MultiPolygon {
        coordinates: Vec<Vec<Vec<Position>>>,
    },
    Circle {
        /// `[lon, lat]`
        center: [f64; 2],
        radius_m: f64,
    },
    Borough {
        name: String,
    },
}

/// A validated zone geometry.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Lon/lat polygons (x = lon, y = lat).
    Area(MultiPolygon<f64>),
    Circle {
        center: LatLon,
        radius_m: f64,
    },
}

impl GeometryInput {
    /// Validate and resolve (boroughs by name, case-insensitively).
    pub fn resolve(&self, boroughs: &Boroughs) -> Result<Shape, InvalidGeometry> {
        match self {
            GeometryInput::Polygon { coordinates } => {
                let p = polygon_from_rings(coordinates, None)?;
                check_geo_valid(&p, None)?;
                Ok(Shape::Area(MultiPolygon::new(vec![p])))
            }
            GeometryInput::MultiPolygon { coordinates } => {
                if coordinates.is_empty() {
                    return Err(InvalidGeometry::new("MultiPolygon has no polygons"));
                }
                let mut polys = Vec::with_capacity(coordinates.len());
                for (i, rings) in coordinates.iter().enumerate() {
                    let p = polygon_from_rings(rings, Some(i))?;
                    check_geo_valid(&p, Some(i))?;
                    polys.push(p);
                }
                let mp = MultiPolygon::new(polys);
                if let Err(e) = mp.check_validation() {
                    return Err(InvalidGeometry::new(format!("MultiPolygon: {e}")));
                }
                Ok(Shape::Area(mp))
            }
            GeometryInput::Circle { center, radius_m } => {
                let [lon, lat] = *center;
                check_position(lon, lat, "circle center")?;
                if !radius_m.is_finite() {
                    return Err(InvalidGeometry::new(
                        "circle radius_m is not a finite number",
                    ));
                }
                if *radius_m <= 0.0 {
                    return Err(InvalidGeometry::new(format!(
                        "circle radius_m must be greater than 0 (got {radius_m})"
                    )));
                }
                if *radius_m > MAX_RADIUS_M {
                    return Err(InvalidGeometry::new(format!(
                        "circle radius_m {radius_m} is larger than the {MAX_RADIUS_M} m limit"
                    )));
                }
                Ok(Shape::Circle {
                    center: LatLon::new(lat, lon),
                    radius_m: *radius_m,
                })
            }
            GeometryInput::Borough { name } => boroughs
                .get(name)
                .map(|mp| Shape::Area(mp.clone()))
                .ok_or_else(|| InvalidGeometry::new(format!("unknown borough {name:?}"))),
        }
    }
}

impl Shape {
    /// GeoJSON-like value for drawing: `Polygon` (one component) or `MultiPolygon` in
    /// lon/lat, or the `Circle` form of the input.
    pub fn to_geojson(&self) -> Value {
        match self {
            Shape::Circle { center, radius_m } => json!({
                "type": "Circle",
                "center": [center.lon, center.lat],
                "radius_m": radius_m,
            }),
            Shape::Area(mp) => {
                let polys: Vec<Value> = mp.0.iter().map(polygon_coords).collect();
                if polys.len() == 1 {
                    json!({"type": "Polygon", "coordinates": polys[0]})
                } else {
                    json!({"type": "MultiPolygon", "coordinates": polys})
                }
            }
        }
    }
}

fn polygon_coords(p: &Polygon<f64>) -> Value {
    let ring = |ls: &LineString<f64>| -> Value {
        Value::Array(ls.0.iter().map(|c| json!([c.x, c.y])).collect())
    };
    let mut rings = vec![ring(p.exterior())];
    rings.extend(p.interiors().iter().map(ring));
    Value::Array(rings)
}

fn where_(poly: Option<usize>, ring: usize) -> String {
    let r = if ring == 0 {
        "exterior ring".to_string()
    } else {
        format!("hole {ring}")
    };
    match poly {
        Some(i) => format!("polygon {i}, {r}"),
        None => r,
    }
}

fn check_position(lon: f64, lat: f64, at: &str) -> Result<(), InvalidGeometry> {
    if !lon.is_finite() || !lat.is_finite() {
        return Err(InvalidGeometry::new(format!(
            "{at}: coordinate is not a finite number"
        )));
    }
    if !(-90.0..=90.0).contains(&lat) {
        return Err(InvalidGeometry::new(format!(
            "{at}: latitude {lat} is outside [-90, 90] (positions are [lon, lat])"
        )));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(InvalidGeometry::new(format!(
            "{at}: longitude {lon} is outside [-180, 180]"
        )));
    }
    Ok(())
}

/// Structural checks (ring length, closure, ranges, antimeridian) and conversion.
fn polygon_from_rings(
    rings: &[Vec<Position>],
    poly: Option<usize>,
) -> Result<Polygon<f64>, InvalidGeometry> {
    if rings.is_empty() {
        let at = poly.map_or(String::new(), |i| format!("polygon {i}: "));
        return Err(InvalidGeometry::new(format!("{at}polygon has no rings")));
    }
    let mut out: Vec<LineString<f64>> = Vec::with_capacity(rings.len());
    for (ri, ring) in rings.iter().enumerate() {
        let at = where_(poly, ri);
        if ring.len() < 4 {
            return Err(InvalidGeometry::new(format!(
                "{at} has {} positions; a ring needs at least 4 (the last repeating the first)",
                ring.len()
            )));
        }
        let mut coords = Vec::with_capacity(ring.len());
        for (pi, pos) in ring.iter().enumerate() {
            if pos.len() < 2 || pos.len() > 3 {
                return Err(InvalidGeometry::new(format!(
                    "{at}, position {pi}: a position is [lon, lat] (got {} numbers)",
                    pos.len()
                )));
            }
            check_position(pos[0], pos[1], &format!("{at}, position {pi}"))?;
            coords.push(Coord {
                x: pos[0],
                y: pos[1],
            });
        }
        if coords.first() != coords.last() {
            return Err(InvalidGeometry::new(format!(
                "{at} is not closed: its last position must repeat its first"
            )));
        }
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for c in &coords {
            lo = lo.min(c.x);
            hi = hi.max(c.x);
        }
        if hi - lo >= 180.0 {
            return Err(InvalidGeometry::new(format!(
                "{at} spans {:.1}° of longitude; zones may not cross the antimeridian",
                hi - lo
            )));
        }
        out.push(LineString::new(coords));
    }
    let exterior = out.remove(0);
    Ok(Polygon::new(exterior, out))
}

fn check_geo_valid(p: &Polygon<f64>, poly: Option<usize>) -> Result<(), InvalidGeometry> {
    match p.check_validation() {
        Ok(()) => Ok(()),
        Err(e) => {
            let at = poly.map_or(String::new(), |i| format!("polygon {i}: "));
            Err(InvalidGeometry::new(format!("{at}{e}")))
        }
    }
}

/// London borough outlines by name, from a GeoJSON FeatureCollection.
#[derive(Debug, Clone, Default)]
pub struct Boroughs {
    /// lower-cased name → (name as written, outline)
    by_key: BTreeMap<String, (String, MultiPolygon<f64>)>,
}

#[derive(Deserialize)]
struct FeatureCollection {
    features: Vec<Feature>,
}

#[derive(Deserialize)]
struct Feature {
    #[serde(default)]
    properties: BTreeMap<String, Value>,
    geometry: GeometryInput,
}

impl Boroughs {
    /// Parse a FeatureCollection whose features carry the borough name in
    /// `properties.name` (or `properties.NAME`, as in the London Datastore file) and a
    /// Polygon or MultiPolygon geometry.
    pub fn from_geojson(text: &str) -> Result<Boroughs, InvalidGeometry> {
        let fc: FeatureCollection = serde_json::from_str(text).map_err(|e| {
            InvalidGeometry::new(format!("borough file is not a FeatureCollection: {e}"))
        })?;
        let mut by_key = BTreeMap::new();
        for (i, f) in fc.features.iter().enumerate() {
            let name = ["name", "NAME", "Name"]
                .iter()
                .find_map(|k| f.properties.get(*k).and_then(Value::as_str))
                .ok_or_else(|| {
                    InvalidGeometry::new(format!("borough feature {i} has no properties.name"))
                })?
                .to_string();
            let at =
                |e: InvalidGeometry| InvalidGeometry::new(format!("borough {name}: {}", e.reason));
            let mp = match &f.geometry {
                GeometryInput::Polygon { coordinates } => {
                    MultiPolygon::new(vec![polygon_from_rings(coordinates, None).map_err(at)?])
                }
                GeometryInput::MultiPolygon { coordinates } => {
                    let mut polys = Vec::with_capacity(coordinates.len());
                    for (pi, rings) in coordinates.iter().enumerate() {
                        polys.push(polygon_from_rings(rings, Some(pi)).map_err(at)?);
                    }
                    MultiPolygon::new(polys)
                }
                _ => {
                    return Err(InvalidGeometry::new(format!(
                        "borough {name}: geometry must be a Polygon or MultiPolygon"
                    )))
                }
            };
            by_key.insert(name.to_lowercase(), (name, mp));
        }
        Ok(Boroughs { by_key })
    }

    /// Outline of a borough, by name, case-insensitively.
    pub fn get(&self, name: &str) -> Option<&MultiPolygon<f64>> {
        self.by_key
            .get(&name.trim().to_lowercase())
            .map(|(_, mp)| mp)
    }

    /// Borough names as written in the source, alphabetically.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_key.values().map(|(n, _)| n.as_str())
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The FeatureCollection served at `GET /v1/geodata/boroughs`: one feature per borough
    /// with `properties.name`.
    pub fn to_feature_collection(&self) -> Value {
        let features: Vec<Value> = self
            .by_key
            .values()
            .map(|(name, mp)| {
                json!({
                    "type": "Feature",
                    "properties": {"name": name},
                    "geometry": Shape::Area(mp.clone()).to_geojson(),
                })
            })
            .collect();
        json!({"type": "FeatureCollection", "features": features})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOROUGHS: &str = "/work/shared/geodata/boundaries/london_boroughs.geojson";

    fn parse(v: Value) -> Result<Shape, InvalidGeometry> {
        let g: GeometryInput = serde_json::from_value(v).expect("json");
        g.resolve(&Boroughs::default())
    }

    fn reason(v: Value) -> String {
        parse(v).expect_err("should be invalid").reason
    }

    #[test]
    fn a_square_with_a_hole_is_a_valid_area() {
        let s = parse(json!({"type":"Polygon","coordinates":[
            [[-0.1,51.5],[-0.09,51.5],[-0.09,51.51],[-0.1,51.51],[-0.1,51.5]],
            [[-0.097,51.503],[-0.093,51.503],[-0.093,51.507],[-0.097,51.507],[-0.097,51.503]]
        ]}))
        .expect("valid");
        let Shape::Area(mp) = s else {
            panic!("area expected")
        };
        assert_eq!(mp.0[0].interiors().len(), 1);
    }

    #[test]
    fn an_unclosed_ring_is_refused() {
        let r = reason(json!({"type":"Polygon","coordinates":[
            [[-0.1,51.5],[-0.09,51.5],[-0.09,51.51],[-0.1,51.51],[-0.1,51.52]]]}));
        assert!(r.contains("not closed"), "{r}");
    }

    #[test]
    fn a_ring_of_three_positions_is_refused() {
        let r = reason(json!({"type":"Polygon","coordinates":[
            [[-0.1,51.5],[-0.09,51.5],[-0.1,51.5]]]}));
        assert!(r.contains("at least 4"), "{r}");
    }

    #[test]
    fn a_bow_tie_is_refused_as_self_intersecting() {
        let r = reason(json!({"type":"Polygon","coordinates":[
            [[0.0,51.0],[0.01,51.01],[0.01,51.0],[0.0,51.01],[0.0,51.0]]]}));
        assert!(r.contains("self-intersection"), "{r}");
    }

    #[test]
    fn swapped_lat_lon_is_refused_with_the_range() {
        let r = reason(json!({"type":"Polygon","coordinates":[
            [[51.5,-0.1],[51.5,95.0],[51.6,95.0],[51.5,-0.1]]]}));
        assert!(r.contains("outside [-90, 90]"), "{r}");
    }

    #[test]
    fn overlapping_multipolygon_components_are_refused() {
        let sq = |x: f64| {
            json!([[
                [x, 51.0],
                [x + 0.02, 51.0],
                [x + 0.02, 51.02],
                [x, 51.02],
                [x, 51.0]
            ]])
        };
        let r = reason(json!({"type":"MultiPolygon","coordinates":[sq(0.0), sq(0.01)]}));
        assert!(r.contains("MultiPolygon"), "{r}");
    }

    #[test]
    fn circles_need_a_positive_sane_radius() {
        assert!(parse(json!({"type":"Circle","center":[-0.1,51.5],"radius_m":150.0})).is_ok());
        assert!(
            reason(json!({"type":"Circle","center":[-0.1,51.5],"radius_m":0.0}))
                .contains("greater than 0")
        );
        assert!(
            reason(json!({"type":"Circle","center":[-0.1,51.5],"radius_m":-5.0}))
                .contains("greater than 0")
        );
        assert!(
            reason(json!({"type":"Circle","center":[-0.1,51.5],"radius_m":250000.0}))
                .contains("limit")
        );
        assert!(
            reason(json!({"type":"Circle","center":[-200.0,51.5],"radius_m":10.0}))
                .contains("longitude")
        );
    }

    #[test]
    fn non_finite_coordinates_are_refused() {
        let g = GeometryInput::Circle {
            center: [f64::NAN, 51.5],
            radius_m: 10.0,
        };
        let e = g.resolve(&Boroughs::default()).expect_err("nan");
        assert!(e.reason.contains("finite"), "{}", e.reason);
    }

    #[test]
    fn the_london_borough_file_resolves_camden_and_refuses_gotham() {
        let text = std::fs::read_to_string(BOROUGHS).expect("borough file");
        let b = Boroughs::from_geojson(&text).expect("parse");
        assert_eq!(b.len(), 33);
        let camden: GeometryInput =
            serde_json::from_value(json!({"type":"Borough","name":"camden"})).expect("json");
        let s = camden.resolve(&b).expect("camden");
        let Shape::Area(mp) = &s else { panic!("area") };
        use geo::Contains;
        // Camden Town tube station.
        assert!(mp.contains(&geo::Point::new(-0.1426, 51.5392)));
        let e = GeometryInput::Borough {
            name: "Gotham".into(),
        }
        .resolve(&b)
        .expect_err("unknown");
        assert!(e.reason.contains("unknown borough"));
        let fc = b.to_feature_collection();
        assert_eq!(fc["features"].as_array().map(Vec::len), Some(33));
        assert!(fc["features"][0]["properties"]["name"].is_string());
    }

    #[test]
    fn shapes_serialise_back_to_geojson() {
        let v = json!({"type":"Polygon","coordinates":[
            [[-0.1,51.5],[-0.09,51.5],[-0.09,51.51],[-0.1,51.5]]]});
        let s = parse(v.clone()).expect("valid");
        assert_eq!(s.to_geojson(), v);
        let c = json!({"type":"Circle","center":[-0.1,51.5],"radius_m":150.0});
        assert_eq!(parse(c.clone()).expect("valid").to_geojson(), c);
    }
}
