//! Parsing a crime-match CSV (SPEC §2 `POST /v1/queries/crime-match`, `text/csv`).
//!
//! Two layouts, told apart by the header row (names trimmed, compared case-insensitively,
//! a UTF-8 byte-order mark ignored):
//! - **ours**: `ref,lat,lon,from,to[,category]` in any column order; `from`/`to` are
//!   RFC 3339 instants, `from ≤ to`; `ref` must not be empty. An unknown column is an
//!   error (a misspelt `category` would otherwise vanish silently).
//! - **data.police.uk street-level**: `Crime ID, Month, Longitude, Latitude, Crime type`
//!   among its usual columns (the others are ignored). The window is the whole month
//!   `YYYY-MM` in UTC: from its first microsecond to its last, both inclusive. The category
//!   is `Crime type`.
//!   - An empty `Crime ID` (anti-social behaviour rows never have one) gets the generated
//!     ref `line-N`, N being the row's line number in the uploaded file. Such refs are
//!     unique only within that upload; the line number ties the result back to the row.
//!   - Empty coordinates (data.police.uk publishes crimes it cannot place) reject the row:
//!     a crime with no place cannot be matched against anyone.
//!
//! A bad row never stops the others: it becomes a [`RowError`] with its line number and
//! the rest of the file is still parsed. Only an unusable header fails the whole file.
//! Nothing here panics on any input.

use chrono::{DateTime, NaiveDate};

use super::US_PER_S;
use crate::geodesy::LatLon;

/// Which header the file had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvLayout {
    /// `ref,lat,lon,from,to[,category]`
    Tagwatch,
    /// data.police.uk street-level crimes
    PoliceUk,
}

/// One crime to match: a point and an inclusive time window.
#[derive(Debug, Clone, PartialEq)]
pub struct CrimeRow {
    /// 1-based line number of the row in the file (the header is line 1).
    pub line: u64,
    pub crime_ref: String,
    pub pos: LatLon,
    pub from_us: i64,
    pub to_us: i64,
    pub category: Option<String>,
}

/// The parsed file: the good rows and the bad ones, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCrimes {
    pub layout: CsvLayout,
    pub crimes: Vec<CrimeRow>,
    pub errors: Vec<RowError>,
}

/// The file as a whole cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CrimeCsvError {
    #[error("the CSV is empty: expected a header row")]
    Empty,
    #[error("the CSV is unreadable: {reason}")]
    Unreadable { reason: String },
    #[error("unrecognised header {found:?}: expected `ref,lat,lon,from,to[,category]` or the data.police.uk street-level header")]
    UnknownHeader { found: String },
    #[error("column {column:?} appears twice in the header")]
    DuplicateColumn { column: String },
    #[error(
        "unknown column {column:?} in the header (expected ref, lat, lon, from, to, category)"
    )]
    UnknownColumn { column: String },
}

/// One row that could not be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct RowError {
    pub line: u64,
    pub kind: RowErrorKind,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowErrorKind {
    #[error("column {column:?} is missing (the row has {fields} fields)")]
    MissingField { column: &'static str, fields: usize },
    #[error("column {column:?} is empty")]
    Empty { column: &'static str },
    #[error("column {column:?} is not valid UTF-8")]
    NotUtf8 { column: &'static str },
    #[error("{column} {value:?} is not a number")]
    NotANumber { column: &'static str, value: String },
    #[error("latitude {value} is not in [-90, 90]")]
    LatOutOfRange { value: f64 },
    #[error("longitude {value} is not in [-180, 180]")]
    LonOutOfRange { value: f64 },
    #[error("{column} {value:?} is not an RFC 3339 time")]
    BadTime { column: &'static str, value: String },
    #[error("month {value:?} is not YYYY-MM")]
    BadMonth { value: String },
    #[error("from {from} is after to {to}")]
    FromAfterTo { from: String, to: String },
    #[error("no coordinates: a crime without a location cannot be matched")]
    NoLocation,
    #[error("malformed CSV: {reason}")]
    Malformed { reason: String },
}

/// Column positions of the recognised layout.
enum Columns {
    Tagwatch {
        r#ref: usize,
        lat: usize,
        lon: usize,
        from: usize,
        to: usize,
        category: Option<usize>,
    },
    PoliceUk {
        id: usize,
        month: usize,
        lon: usize,
        lat: usize,
        crime_type: usize,
    },
}

/// Parses a crime-match CSV. See the module doc.
pub fn parse_crime_csv(input: &[u8]) -> Result<ParsedCrimes, CrimeCsvError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => return Err(CrimeCsvError::Empty),
        Some(Err(e)) => {
            return Err(CrimeCsvError::Unreadable {
                reason: e.to_string(),
            })
        }
        Some(Ok(h)) => h,
    };
    let names: Vec<String> = header
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_ascii_lowercase())
        .collect();
    let columns = recognise(&names)?;
    let layout = match columns {
        Columns::Tagwatch { .. } => CsvLayout::Tagwatch,
        Columns::PoliceUk { .. } => CsvLayout::PoliceUk,
    };

    let mut crimes = Vec::new();
    let mut errors = Vec::new();
    let mut lines = LineCounter::new(input);
    let mut last_line = 1;
    for record in records {
        match record {
            Ok(rec) => {
                let line = rec
                    .position()
                    .map_or(last_line + 1, |p| lines.line_at(p.byte()));
                last_line = line;
                // A blank line (a lone empty field) is not a row.
                if rec.len() == 1 && rec.get(0).is_some_and(|f| f.trim_ascii().is_empty()) {
                    continue;
                }
                match parse_row(&rec, &columns, line) {
                    Ok(c) => crimes.push(c),
                    Err(kind) => errors.push(RowError { line, kind }),
                }
            }
            Err(e) => {
                let line = e
                    .position()
                    .map_or(last_line + 1, |p| lines.line_at(p.byte()));
                let fatal = matches!(e.kind(), csv::ErrorKind::Io(_));
                errors.push(RowError {
                    line,
                    kind: RowErrorKind::Malformed {
                        reason: e.to_string(),
                    },
                });
                if fatal {
                    break;
                }
            }
        }
    }
    Ok(ParsedCrimes {
        layout,
        crimes,
        errors,
    })
}

/// Physical line numbers of byte offsets, counted by us: the csv crate's own line
/// numbers skip blank lines and miscount CRLF files (Excel's default).
struct LineCounter<'a> {
    input: &'a [u8],
    pos: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            line: 1,
        }
    }

    /// The line of the first byte of the record the csv reader says starts at `byte`
    /// (the reader reports the offset *before* any line terminators it skipped). Offsets
    /// must be non-decreasing across calls, which the reader guarantees.
    fn line_at(&mut self, byte: u64) -> u64 {
        let mut target = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.input.len());
        while target < self.input.len() && matches!(self.input[target], b'\r' | b'\n') {
            target += 1;
        }
        while self.pos < target {
            match self.input[self.pos] {
                b'\n' => self.line += 1,
                // A lone CR (classic Mac) also ends a line; CRLF counts once, at the LF.
                b'\r' if self.input.get(self.pos + 1) != Some(&b'\n') => self.line += 1,
                _ => {}
            }
            self.pos += 1;
        }
        self.line
    }
}

fn recognise(names: &[String]) -> Result<Columns, CrimeCsvError> {
    let find = |n: &str| names.iter().position(|h| h == n);
    let police = (
        find("crime id"),
        find("month"),
        find("longitude"),
        find("latitude"),
        find("crime type"),
    );
    if let (Some(id), Some(month), Some(lon), Some(lat), Some(crime_type)) = police {
        return Ok(Columns::PoliceUk {
            id,
            month,
            lon,
            lat,
            crime_type,
        });
    }
    let ours = (
        find("ref"),
        find("lat"),
        find("lon"),
        find("from"),
        find("to"),
    );
    let (Some(r#ref), Some(lat), Some(lon), Some(from), Some(to)) = ours else {
        return Err(CrimeCsvError::UnknownHeader {
            found: names.join(","),
        });
    };
    for (i, n) in names.iter().enumerate() {
        if !["ref", "lat", "lon", "from", "to", "category"].contains(&n.as_str()) {
            return Err(CrimeCsvError::UnknownColumn { column: n.clone() });
        }
        if names[..i].contains(n) {
            return Err(CrimeCsvError::DuplicateColumn { column: n.clone() });
        }
    }
    Ok(Columns::Tagwatch {
        r#ref,
        lat,
        lon,
        from,
        to,
        category: find("category"),
    })
}

/// The trimmed text of column `idx` (named `column` in errors).
fn field<'r>(
    rec: &'r csv::ByteRecord,
    idx: usize,
    column: &'static str,
) -> Result<&'r str, RowErrorKind> {
    let raw = rec.get(idx).ok_or(RowErrorKind::MissingField {
        column,
        fields: rec.len(),
    })?;
    std::str::from_utf8(raw)
        .map(str::trim)
        .map_err(|_| RowErrorKind::NotUtf8 { column })
}

fn non_empty<'r>(
    rec: &'r csv::ByteRecord,
    idx: usize,
    column: &'static str,
) -> Result<&'r str, RowErrorKind> {
    let s = field(rec, idx, column)?;
    if s.is_empty() {
        Err(RowErrorKind::Empty { column })
    } else {
        Ok(s)
    }
}

fn number(s: &str, column: &'static str) -> Result<f64, RowErrorKind> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| RowErrorKind::NotANumber {
            column,
            value: s.to_owned(),
        })
}

fn position(lat: &str, lon: &str) -> Result<LatLon, RowErrorKind> {
    let lat = number(lat, "lat")?;
    let lon = number(lon, "lon")?;
    if !(-90.0..=90.0).contains(&lat) {
        return Err(RowErrorKind::LatOutOfRange { value: lat });
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(RowErrorKind::LonOutOfRange { value: lon });
    }
    Ok(LatLon::new(lat, lon))
}

fn rfc3339_us(s: &str, column: &'static str) -> Result<i64, RowErrorKind> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|_| RowErrorKind::BadTime {
            column,
            value: s.to_owned(),
        })
}

/// `[first µs, last µs]` of the UTC month `YYYY-MM`.
fn month_window(s: &str) -> Result<(i64, i64), RowErrorKind> {
    let bad = || RowErrorKind::BadMonth {
        value: s.to_owned(),
    };
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u32 = m.parse().map_err(|_| bad())?;
    let start = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .ok_or_else(bad)?;
    let us = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp() * US_PER_S)
            .ok_or_else(bad)
    };
    Ok((us(start)?, us(next)? - 1))
}

fn parse_row(rec: &csv::ByteRecord, cols: &Columns, line: u64) -> Result<CrimeRow, RowErrorKind> {
    match *cols {
        Columns::Tagwatch {
            r#ref,
            lat,
            lon,
            from,
            to,
            category,
        } => {
            let crime_ref = non_empty(rec, r#ref, "ref")?.to_owned();
            let pos = position(non_empty(rec, lat, "lat")?, non_empty(rec, lon, "lon")?)?;
            let from_s = non_empty(rec, from, "from")?;
            let to_s = non_empty(rec, to, "to")?;
            let (from_us, to_us) = (rfc3339_us(from_s, "from")?, rfc3339_us(to_s, "to")?);
            if from_us > to_us {
                return Err(RowErrorKind::FromAfterTo {
                    from: from_s.to_owned(),
                    to: to_s.to_owned(),
                });
            }
            let category = match category {
                Some(i) => Some(field(rec, i, "category")?)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
                None => None,
            };
            Ok(CrimeRow {
                line,
                crime_ref,
                pos,
                from_us,
                to_us,
                category,
            })
        }
        Columns::PoliceUk {
            id,
            month,
            lon,
            lat,
            crime_type,
        } => {
            let id = field(rec, id, "Crime ID")?;
            let crime_ref = if id.is_empty() {
                format!("line-{line}")
            } else {
                id.to_owned()
            };
            let (from_us, to_us) = month_window(non_empty(rec, month, "Month")?)?;
            let (lat, lon) = (field(rec, lat, "Latitude")?, field(rec, lon, "Longitude")?);
            if lat.is_empty() || lon.is_empty() {
                return Err(RowErrorKind::NoLocation);
            }
            let pos = position(lat, lon)?;
            let category = Some(field(rec, crime_type, "Crime type")?)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            Ok(CrimeRow {
                line,
                crime_ref,
                pos,
                from_us,
                to_us,
                category,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ParsedCrimes {
        parse_crime_csv(s.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    const JAN_2023_US: i64 = 1_672_531_200 * US_PER_S;
    const FEB_2023_US: i64 = 1_675_209_600 * US_PER_S;

    #[test]
    fn our_layout_parses_with_rfc3339_windows_and_an_optional_category() {
        let p = parse(
            "ref,lat,lon,from,to,category\n\
             CR-1,51.5,-0.12,2024-06-01T10:00:00Z,2024-06-01T11:00:00+01:00,burglary\n\
             CR-2,51.6,-0.10,2024-06-01T10:00:00Z,2024-06-01T10:00:00Z,\n",
        );
        assert_eq!(p.layout, CsvLayout::Tagwatch);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.crimes.len(), 2);
        let c = &p.crimes[0];
        assert_eq!((c.line, c.crime_ref.as_str()), (2, "CR-1"));
        assert_eq!(c.from_us, c.to_us, "11:00+01:00 is 10:00Z");
        assert_eq!(c.category.as_deref(), Some("burglary"));
        assert_eq!(p.crimes[1].category, None);
    }

    #[test]
    fn our_layout_accepts_columns_in_any_order_without_category() {
        let p =
            parse("lon,lat,ref,to,from\n-0.1,51.5,X,2024-01-01T01:00:00Z,2024-01-01T00:00:00Z\n");
        assert_eq!(p.crimes.len(), 1);
        assert_eq!(p.crimes[0].pos, LatLon::new(51.5, -0.1));
    }

    #[test]
    fn bad_rows_are_reported_with_their_line_numbers_and_the_rest_still_parse() {
        let p = parse(
            "ref,lat,lon,from,to\n\
             A,91,0,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z\n\
             B,51.5,-0.1,yesterday,2024-01-01T01:00:00Z\n\
             C,51.5,-0.1,2024-01-01T02:00:00Z,2024-01-01T01:00:00Z\n\
             ,51.5,-0.1,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z\n\
             E,51.5\n\
             F,NaN,-0.1,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z\n\
             \n\
             G,51.5,-0.1,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z\n",
        );
        let lines: Vec<u64> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
        assert!(matches!(
            p.errors[0].kind,
            RowErrorKind::LatOutOfRange { .. }
        ));
        assert!(matches!(
            p.errors[1].kind,
            RowErrorKind::BadTime { column: "from", .. }
        ));
        assert!(matches!(p.errors[2].kind, RowErrorKind::FromAfterTo { .. }));
        assert!(matches!(
            p.errors[3].kind,
            RowErrorKind::Empty { column: "ref" }
        ));
        assert!(matches!(
            p.errors[4].kind,
            RowErrorKind::MissingField { .. }
        ));
        assert!(matches!(p.errors[5].kind, RowErrorKind::NotANumber { .. }));
        assert_eq!(
            p.errors[0].to_string(),
            "line 2: latitude 91 is not in [-90, 90]"
        );
        assert_eq!(p.crimes.len(), 1);
        assert_eq!((p.crimes[0].line, p.crimes[0].crime_ref.as_str()), (9, "G"));
    }

    #[test]
    fn line_numbers_count_blank_lines_crlf_and_quoted_newlines() {
        let p = parse(
            "ref,lat,lon,from,to,category\r\n\
             \r\n\
             A,91,0,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z,\r\n\
             B,51,0,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z,\"two\r\nlines\"\r\n\
             \r\n\
             C,95,0,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z,\r\n",
        );
        let lines: Vec<u64> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 7]);
        assert_eq!(p.crimes[0].line, 4);
        assert_eq!(p.crimes[0].category.as_deref(), Some("two\r\nlines"));
    }

    #[test]
    fn an_unknown_header_or_column_fails_the_whole_file() {
        assert!(matches!(
            parse_crime_csv(b"a,b,c\n1,2,3\n"),
            Err(CrimeCsvError::UnknownHeader { .. })
        ));
        assert!(matches!(
            parse_crime_csv(b"ref,lat,lon,from,to,catgory\n"),
            Err(CrimeCsvError::UnknownColumn { .. })
        ));
        assert!(matches!(
            parse_crime_csv(b"ref,lat,lon,from,to,ref\n"),
            Err(CrimeCsvError::DuplicateColumn { .. })
        ));
        assert_eq!(parse_crime_csv(b""), Err(CrimeCsvError::Empty));
    }

    #[test]
    fn invalid_utf8_and_quoting_errors_never_panic() {
        let p = parse_crime_csv(
            b"ref,lat,lon,from,to\n\xff\xfe,51,0,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n\"A,51\n",
        );
        let p = p.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.crimes.len(), 0);
        assert!(!p.errors.is_empty());
        assert!(matches!(p.errors[0].kind, RowErrorKind::NotUtf8 { .. }));
    }

    #[test]
    fn a_police_row_spans_its_whole_utc_month_inclusive() {
        let p = parse(
            "\u{feff}Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,Last outcome category,Context\n\
             abc,2023-01,Metropolitan Police Service,Metropolitan Police Service,-0.681541,50.792113,On or near Fletcher Way,E01031444,Arun 016B,Violence and sexual offences,Under investigation,\n",
        );
        assert_eq!(p.layout, CsvLayout::PoliceUk);
        let c = &p.crimes[0];
        assert_eq!(c.crime_ref, "abc");
        assert_eq!((c.from_us, c.to_us), (JAN_2023_US, FEB_2023_US - 1));
        assert_eq!(c.pos, LatLon::new(50.792113, -0.681541));
        assert_eq!(c.category.as_deref(), Some("Violence and sexual offences"));
    }

    #[test]
    fn december_ends_at_the_new_year_and_a_bad_month_is_a_row_error() {
        assert_eq!(
            month_window("2023-12").map(|w| w.1 + 1),
            Ok(1_704_067_200 * US_PER_S)
        );
        for m in ["2023-13", "2023-1", "23-01", "Jan 2023", "2023-00"] {
            assert!(month_window(m).is_err(), "{m}");
        }
    }

    #[test]
    fn a_police_row_without_crime_id_gets_a_line_ref_and_one_without_location_is_rejected() {
        let p = parse(
            "Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,Last outcome category,Context\n\
             ,2023-01,MPS,MPS,0.140127,51.588913,On or near Beansland Grove,E01000027,Barking and Dagenham 001A,Anti-social behaviour,,\n\
             x1,2023-01,MPS,MPS,,,No Location,,,Other crime,Under investigation,\n",
        );
        assert_eq!(p.crimes.len(), 1);
        assert_eq!(p.crimes[0].crime_ref, "line-2");
        assert_eq!(
            p.crimes[0].category.as_deref(),
            Some("Anti-social behaviour")
        );
        assert_eq!(p.errors.len(), 1);
        assert_eq!(
            (p.errors[0].line, &p.errors[0].kind),
            (3, &RowErrorKind::NoLocation)
        );
    }

    #[test]
    fn the_data_police_uk_samples_parse_completely() {
        // The first rows of two files from /geodata/crime (see tests/fixtures/crime/README.md).
        for (file, rows, without_id) in [
            ("2023-01-metropolitan-street-alltypes-sample.csv", 300, 66),
            ("2024-06-metropolitan-street-burglary.csv", 200, 0),
        ] {
            let path = format!("{}/tests/fixtures/crime/{file}", env!("CARGO_MANIFEST_DIR"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let p = parse_crime_csv(&bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.layout, CsvLayout::PoliceUk);
            assert_eq!(p.crimes.len() + p.errors.len(), rows, "{file}");
            assert!(
                p.errors.is_empty(),
                "{file}: {:?}",
                &p.errors[..p.errors.len().min(3)]
            );
            assert!(p.crimes.iter().all(|c| c.from_us < c.to_us));
            assert!(p.crimes.iter().all(|c| (50.0..53.0).contains(&c.pos.lat)));
            let generated = p
                .crimes
                .iter()
                .filter(|c| c.crime_ref.starts_with("line-"))
                .count();
            assert_eq!(generated, without_id, "{file}");
        }
    }
}
