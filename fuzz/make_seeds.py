#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*.

Seeds are real inputs: the JSON, query strings and CSV the tests, the simulator and the
shipped data use (tests/fixtures/crime, geodata/crime, geodata/boundaries). Run from the
repository root before a first `cargo fuzz run` on an empty corpus; the committed corpora
already hold what of these seeds adds coverage. Re-running it is harmless (same names,
same bytes).
"""

import csv
import io
import json
import struct
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)


# --- pings ------------------------------------------------------------------------------
PINGS = [
    {"device_id": "TAG-1", "ts": "2026-06-01T11:59:00Z", "lat": 51.5074, "lon": -0.1278},
    {"device_id": "GTO-00017", "ts": "2026-05-31T23:00:00.123456+01:00", "lat": 51.5392,
     "lon": -0.1426, "accuracy_m": 8.5, "fix": "gps", "speed_mps": 1.4, "heading_deg": 359.9,
     "battery_pct": 80, "tamper": False, "charging": True, "vendor_x": {"a": [1]}},
    {"device_id": "T1", "ts": "2026-06-01T11:59:00Z", "fix": "none", "battery_pct": 15},
    {"device_id": "T1", "ts": "2026-06-01T11:58:00Z", "lat": -90, "lon": 180, "fix": "lbs",
     "accuracy_m": 1500},
    {"device_id": "T1", "ts": "2026-06-01T11:58:00Z", "lat": 90, "lon": -180, "fix": "wifi",
     "accuracy_m": 0, "heading_deg": 0, "speed_mps": 0, "battery_pct": 100},
    {"device_id": "T1", "ts": "2026-06-01T12:06:00Z", "lat": 0, "lon": 0},
    {"device_id": "T1", "ts": "2025-05-01T12:00:00Z", "lat": 0, "lon": 0},
    {"device_id": "T 1", "ts": "2026-06-01T11:59:00Z", "lat": 91, "lon": -181,
     "accuracy_m": -1, "battery_pct": 101, "heading_deg": 361, "speed_mps": -3},
    {"device_id": "T1", "ts": "yesterday"},
    {"device_id": 7},
    "x",
]
write("ping_json_array", "mixed", json.dumps(PINGS))
write("ping_json_array", "one", json.dumps(PINGS[:1]))
write("ping_json_array", "empty", "[]")
write("ping_json_array", "tests-wrong-type",
      '[{"device_id":"A","ts":"2026-01-01T00:00:00Z","lat":1,"lon":2},{"device_id":7},"x"]')
write("ping_ndjson", "mixed", "\n".join(json.dumps(p) for p in PINGS) + "\n")
write("ping_ndjson", "crlf-blank",
      '{"device_id":"A","ts":"2026-06-01T00:00:00Z","lat":1,"lon":2}\r\n\r\nnot json\r\n'
      '{"device_id":"A","ts":"2026-06-01T00:00:01Z","lat":1,"lon":2}')
write("ping_ndjson", "one", json.dumps(PINGS[1]))

# --- OsmAnd -----------------------------------------------------------------------------
for name, q in {
    "spine": "id=TAG-1&lat=51.5074&lon=-0.1278&timestamp=1780315000&hdop=1.2&batt=80"
             "&speed=3&bearing=90&token=tok",
    "millis": "id=TAG-1&lat=51.5&lon=-0.12&timestamp=1780315000000",
    "rfc3339": "deviceid=TAG-1&lat=51.5&lon=-0.12&timestamp=2026-06-01T11%3A59%3A00Z"
               "&accuracy=12&charge=true&heading=270",
    "no-timestamp": "id=TAG-1&lat=51.5&lon=-0.12",
    "bad": "id=TAG-1&lat=99&lon=0&timestamp=abc&hdop=x&token=",
    "plus-spaces": "id=+TAG-1+&lat=+51.5&lon=-0.12&batt=&charge=1&timestamp=-1",
}.items():
    write("osmand_query", name, q)

# --- zone geometry ----------------------------------------------------------------------
def square(x, y, d):
    return [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]


GEOMETRIES = {
    "circle": {"type": "Circle", "center": [-0.1426, 51.5392], "radius_m": 300},
    "circle-bad": {"type": "Circle", "center": [200, 51], "radius_m": 0},
    "borough": {"type": "Borough", "name": "Hackney"},
    "polygon-hole": {"type": "Polygon", "coordinates": [
        square(-0.1, 51.5, 0.01), square(-0.097, 51.503, 0.004)]},
    "polygon-3d": {"type": "Polygon", "coordinates": [
        [[-0.1, 51.5, 10], [-0.09, 51.5, 10], [-0.09, 51.51, 12], [-0.1, 51.5, 10]]]},
    "hexagon": {"type": "Polygon", "coordinates": [[
        [-0.1215032, 51.5333312], [-0.1243621, 51.5352111], [-0.1289172, 51.5345802],
        [-0.1305941, 51.5320689], [-0.1277352, 51.5301891], [-0.1231800, 51.5308199],
        [-0.1215032, 51.5333312]]]},
    "bow-tie": {"type": "Polygon", "coordinates": [
        [[0.0, 51.0], [0.01, 51.01], [0.01, 51.0], [0.0, 51.01], [0.0, 51.0]]]},
    "unclosed": {"type": "Polygon", "coordinates": [
        [[0, 51], [0.1, 51], [0.1, 51.1], [0, 51.1]]]},
    "multipolygon-holes": {"type": "MultiPolygon", "coordinates": [
        [square(0.0, 51.0, 0.02), square(0.005, 51.005, 0.005)],
        [square(0.05, 51.0, 0.02), square(0.055, 51.005, 0.004), square(0.062, 51.012, 0.003)],
    ]},
    "multipolygon-overlap": {"type": "MultiPolygon", "coordinates": [
        [square(0.0, 51.0, 0.02)], [square(0.01, 51.0, 0.02)]]},
    "antimeridian": {"type": "Polygon", "coordinates": [
        [[179, 0], [-179, 0], [-179, 1], [179, 1], [179, 0]]]},
}
for name, g in GEOMETRIES.items():
    write("zone_geometry", name, json.dumps(g))
boroughs = json.loads((ROOT / "geodata/boundaries/london_boroughs.geojson").read_text())
for f in boroughs["features"]:
    if f["properties"].get("name", f["properties"].get("NAME")) == "City of London":
        write("zone_geometry", "city-of-london", json.dumps(f["geometry"]))

# --- zone schedule ----------------------------------------------------------------------
def us(iso):
    return int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp()) * 10**6


ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
SCHEDULES = {
    "curfew-spring": ("2026-03-28T23:00:00", "Europe/London",
                      [{"days": ALL_DAYS, "start": "19:00", "end": "07:00"}]),
    "curfew-autumn": ("2026-10-25T03:00:00", "Europe/London",
                      [{"days": ["sat"], "start": "19:00", "end": "07:00"}]),
    "gap-start": ("2026-03-29T02:00:00", "Europe/London",
                  [{"days": ["sun"], "start": "01:30", "end": "05:00"}]),
    "always": ("2026-06-01T12:00:00", "Europe/London",
               [{"days": ALL_DAYS, "start": "00:00", "end": "00:00"}]),
    "touching": ("2026-01-13T08:00:00", "Europe/London",
                 [{"days": ["mon"], "start": "19:00", "end": "07:00"},
                  {"days": ["tue"], "start": "07:00", "end": "09:00"}]),
    "to-midnight": ("2026-01-12T23:30:00", "America/New_York",
                    [{"days": ["mon", "fri"], "start": "22:00", "end": "24:00"}]),
    "lord-howe": ("2026-04-05T15:00:00", "Australia/Lord_Howe",
                  [{"days": ["sun"], "start": "01:45", "end": "02:15"}]),
    "apia-skipped-day": ("2011-12-30T10:00:00", "Pacific/Apia",
                         [{"days": ["fri"], "start": "00:00", "end": "12:00"}]),
    "santiago": ("2026-09-06T04:00:00", "America/Santiago",
                 [{"days": ["sun"], "start": "00:00", "end": "01:00"}]),
    "bad-zone": ("2026-06-01T12:00:00", "Mars/Olympus",
                 [{"days": ["mon"], "start": "19:00", "end": "07:00"}]),
    "bad-time": ("2026-06-01T12:00:00", "Europe/London",
                 [{"days": ["mon"], "start": "24:00", "end": "7:00"}]),
}
for name, (at, tz, windows) in SCHEDULES.items():
    body = json.dumps({"timezone": tz, "windows": windows})
    write("zone_schedule", name, struct.pack("<q", us(at)) + body.encode())
# chrono's first and last calendar days (years -262143 and 262142), as µs
for name, t in {"last-day": 8_210_266_790_400_000_000, "first-day": -8_334_601_315_200_000_000}.items():
    write("zone_schedule", name, struct.pack("<q", t) + json.dumps({
        "timezone": "Europe/London", "windows": [{"days": ALL_DAYS, "start": "19:00", "end": "07:00"}]}).encode())
write("zone_schedule", "end-of-time",
      struct.pack("<q", 2**63 - 1) + json.dumps({"timezone": "UTC", "windows": [
          {"days": ALL_DAYS, "start": "00:00", "end": "00:00"}]}).encode())

# --- crime CSV --------------------------------------------------------------------------
def head(path, rows):
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(lines[: rows + 1])


write("crime_csv", "burglary", head("geodata/crime/2024-06-metropolitan-street-burglary.csv", 4))
alltypes = (ROOT / "tests/fixtures/crime/2023-01-metropolitan-street-alltypes-sample.csv")
rows = list(csv.reader(io.StringIO(alltypes.read_text(encoding="utf-8"))))
no_id = next(r for r in rows[1:] if not r[0])
no_loc = next((r for r in rows[1:] if not r[4]), rows[1][:4] + ["", ""] + rows[1][6:])
out = io.StringIO()
csv.writer(out, lineterminator="\r\n").writerows([rows[0], rows[1], no_id, no_loc])
write("crime_csv", "alltypes-crlf-bom", "\ufeff" + out.getvalue())
write("crime_csv", "ours",
      "ref,lat,lon,from,to,category\n"
      "CR-1,51.5,-0.12,2024-06-01T10:00:00Z,2024-06-01T11:00:00+01:00,burglary\n"
      "CR-2,51.6,-0.10,2024-06-01T10:00:00Z,2024-06-01T10:00:00Z,\n"
      "A,91,0,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z,\n"
      "B,51.5,-0.1,yesterday,2024-01-01T01:00:00Z,\n"
      "C,51.5,-0.1,2024-01-01T02:00:00Z,2024-01-01T01:00:00Z,\n"
      ",51.5,-0.1,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z,\n"
      "E,51.5\n"
      "F,NaN,-0.1,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z,\"two\r\nlines\"\n"
      "\n")
write("crime_csv", "ours-reordered",
      "lon,lat,ref,to,from\r-0.1,51.5,X,2024-01-01T01:00:00Z,2024-01-01T00:00:00Z\r")
write("crime_csv", "bad-header", "ref,lat,lon,from,to,catgory\n")
write("crime_csv", "not-utf8",
      b"ref,lat,lon,from,to\n\xff\xfe,51,0,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n\"A,51\n")
write("crime_csv", "police-months",
      "Crime ID,Month,Longitude,Latitude,Crime type\n"
      "a,2023-12,-0.1,51.5,Burglary\nb,2023-13,-0.1,51.5,x\nc,0000-01,0,0,\n,9999-12,1,1,y\n")
