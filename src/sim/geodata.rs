//! The London geodata shipped in `geodata/`, embedded in the binary so the simulator and the
//! demo work from any directory (see `geodata/README.md` for sources and licences).
//!
//! Parsed once, on first use, into plain types: borough polygons in lon/lat (`geo`), station
//! and place points, and the June 2024 burglaries. The embedded files are known good; a parse
//! failure is still reported as an error rather than a panic.

use std::sync::OnceLock;

use geo::{Contains, Coord, LineString, MultiPolygon, Point, Polygon};
use serde_json::Value;

use crate::geodesy::LatLon;

/// The London borough boundaries (GeoJSON FeatureCollection, property `NAME`).
pub const BOROUGHS_GEOJSON: &str = include_str!("../../geodata/boundaries/london_boroughs.geojson");
/// Tube and DLR stations, `name,lat,lon`, no header.
pub const STATIONS_CSV: &str = include_str!("../../geodata/poi/tube_dlr_stations.csv");
/// OpenStreetMap place nodes in Greater London, `name,lat,lon`, no header.
pub const PLACES_CSV: &str = include_str!("../../geodata/poi/greater_london_places.csv");
/// Police-recorded burglaries in the Met area, June 2024, data.police.uk street-level schema.
pub const BURGLARY_CSV: &str =
    include_str!("../../geodata/crime/2024-06-metropolitan-street-burglary.csv");

/// The eight "Gripping the Offender" pilot boroughs, as spelled in the boundaries' `NAME`.
pub const GTO_BOROUGHS: [&str; 8] = [
    "Camden",
    "Enfield",
    "Hackney",
    "Haringey",
    "Islington",
    "Newham",
    "Tower Hamlets",
    "Waltham Forest",
];

/// Why the embedded geodata could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("embedded geodata {file}: {reason}")]
pub struct GeodataError {
    pub file: &'static str,
    pub reason: String,
}

/// A named point.
#[derive(Debug, Clone)]
pub struct Poi {
    pub name: String,
    pub pos: LatLon,
}

/// One borough: its name as in the boundaries file and its outline in lon/lat.
#[derive(Debug, Clone)]
pub struct Borough {
    pub name: String,
    pub gss_code: String,
    pub geometry: MultiPolygon<f64>,
}

impl Borough {
    /// Whether the point lies inside the borough (`geo` point-in-polygon).
    pub fn contains(&self, p: LatLon) -> bool {
        self.geometry.contains(&Point::new(p.lon, p.lat))
    }
}

/// One police-recorded burglary (location anonymised to a snap point, time to the month).
#[derive(Debug, Clone)]
pub struct Burglary {
    pub crime_id: String,
    /// `YYYY-MM`
    pub month: String,
    pub pos: LatLon,
    pub location: String,
    pub lsoa_name: String,
}

/// All the shipped geodata, parsed.
#[derive(Debug)]
pub struct London {
    pub boroughs: Vec<Borough>,
    /// Deduplicated by name (the list has one row per entrance for a few stations).
    pub stations: Vec<Poi>,
    pub places: Vec<Poi>,
    pub burglaries: Vec<Burglary>,
}

impl London {
    pub fn borough(&self, name: &str) -> Option<&Borough> {
        self.boroughs.iter().find(|b| b.name == name)
    }

    /// The borough containing the point, if any.
    pub fn borough_at(&self, p: LatLon) -> Option<&Borough> {
        self.boroughs.iter().find(|b| b.contains(p))
    }
}

/// The parsed geodata, parsed on first call.
pub fn london() -> Result<&'static London, GeodataError> {
    static LONDON: OnceLock<Result<London, GeodataError>> = OnceLock::new();
    LONDON.get_or_init(parse).as_ref().map_err(Clone::clone)
}

fn parse() -> Result<London, GeodataError> {
    let mut stations = parse_points(STATIONS_CSV, "poi/tube_dlr_stations.csv")?;
    let mut seen = std::collections::HashSet::new();
    stations.retain(|s| seen.insert(s.name.clone()));
    Ok(London {
        boroughs: parse_boroughs()?,
        stations,
        places: parse_points(PLACES_CSV, "poi/greater_london_places.csv")?,
        burglaries: parse_burglaries()?,
    })
}

fn parse_boroughs() -> Result<Vec<Borough>, GeodataError> {
    const FILE: &str = "boundaries/london_boroughs.geojson";
    let err = |reason: String| GeodataError { file: FILE, reason };
    let doc: Value = serde_json::from_str(BOROUGHS_GEOJSON).map_err(|e| err(e.to_string()))?;
    let features = doc["features"]
        .as_array()
        .ok_or_else(|| err("no features".into()))?;
    features
        .iter()
        .map(|f| {
            let name = f["properties"]["NAME"]
                .as_str()
                .ok_or_else(|| err("a feature without NAME".into()))?;
            let geometry = multipolygon(&f["geometry"])
                .ok_or_else(|| err(format!("bad geometry for {name}")))?;
            Ok(Borough {
                name: name.to_owned(),
                gss_code: f["properties"]["GSS_CODE"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                geometry,
            })
        })
        .collect()
}

/// A GeoJSON `Polygon` or `MultiPolygon` geometry object as a `MultiPolygon` (lon/lat).
pub fn multipolygon(g: &Value) -> Option<MultiPolygon<f64>> {
    fn ring(v: &Value) -> Option<LineString<f64>> {
        v.as_array()?
            .iter()
            .map(|c| {
                let a = c.as_array()?;
                Some(Coord {
                    x: a.first()?.as_f64()?,
                    y: a.get(1)?.as_f64()?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .map(LineString::from)
    }
    fn polygon(v: &Value) -> Option<Polygon<f64>> {
        let mut rings = v.as_array()?.iter().map(ring);
        let exterior = rings.next()??;
        let holes = rings.collect::<Option<Vec<_>>>()?;
        Some(Polygon::new(exterior, holes))
    }
    match g["type"].as_str()? {
        "Polygon" => Some(MultiPolygon(vec![polygon(&g["coordinates"])?])),
        "MultiPolygon" => g["coordinates"]
            .as_array()?
            .iter()
            .map(polygon)
            .collect::<Option<Vec<_>>>()
            .map(MultiPolygon),
        _ => None,
    }
}

fn parse_points(text: &'static str, file: &'static str) -> Result<Vec<Poi>, GeodataError> {
    let text = text.trim_start_matches('\u{feff}');
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    rd.records()
        .map(|r| {
            let r = r.map_err(|e| GeodataError {
                file,
                reason: e.to_string(),
            })?;
            let num = |i: usize| r.get(i).and_then(|s| s.trim().parse::<f64>().ok());
            match (r.get(0), num(1), num(2)) {
                (Some(name), Some(lat), Some(lon)) => Ok(Poi {
                    name: name.trim().to_owned(),
                    pos: LatLon::new(lat, lon),
                }),
                _ => Err(GeodataError {
                    file,
                    reason: format!("bad row {r:?}"),
                }),
            }
        })
        .collect()
}

fn parse_burglaries() -> Result<Vec<Burglary>, GeodataError> {
    const FILE: &str = "crime/2024-06-metropolitan-street-burglary.csv";
    let err = |reason: String| GeodataError { file: FILE, reason };
    let mut rd = csv::Reader::from_reader(BURGLARY_CSV.as_bytes());
    let mut out = Vec::new();
    for r in rd.records() {
        let r = r.map_err(|e| err(e.to_string()))?;
        let num = |i: usize| r.get(i).and_then(|s| s.trim().parse::<f64>().ok());
        // Rows without a location (a few in every month) cannot be a crime scene.
        let (Some(lon), Some(lat)) = (num(4), num(5)) else {
            continue;
        };
        let field = |i: usize| r.get(i).unwrap_or_default().to_owned();
        out.push(Burglary {
            crime_id: field(0),
            month: field(1),
            pos: LatLon::new(lat, lon),
            location: field(6),
            lsoa_name: field(8),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_geodata_parses_with_every_pilot_borough() {
        let l = london().expect("geodata");
        assert_eq!(l.boroughs.len(), 33);
        for b in GTO_BOROUGHS {
            assert!(l.borough(b).is_some(), "{b}");
        }
        assert!(l.stations.len() > 250, "{}", l.stations.len());
        assert!(l.places.len() > 700);
        assert!(l.burglaries.len() > 3_000);
    }

    #[test]
    fn a_known_station_lies_in_its_borough() {
        let l = london().expect("geodata");
        let angel = l
            .stations
            .iter()
            .find(|s| s.name == "Angel")
            .expect("Angel");
        assert_eq!(
            l.borough_at(angel.pos).map(|b| b.name.as_str()),
            Some("Islington")
        );
    }
}
