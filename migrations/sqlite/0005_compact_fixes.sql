-- Smaller fix rows (the #7 disk target, README "Bytes per stored fix").
--
-- 1. Accuracy, speed, heading and battery are kept in hundredths (cm, cm/s, 0.01°, 0.01 %):
--    ingest rounds them to 0.01 (DECISIONS "Fix values"), so the stored value is a whole
--    number, which SQLite writes as a 1–3 byte integer even in a REAL column (an integral
--    REAL is stored as an integer and read back as a REAL). A value that does not fit that
--    way (beyond about 10¹⁷) is written as an 8-byte REAL: nothing is ever lost.
-- 2. `received_at` is kept as its lag after `ts` (a few bytes instead of eight).
-- 3. The crime-scene fine index moves out of the row: `fix_cells` holds one row per device,
--    H3 cell and minute it had a positioned fix in (`minute` = ts ÷ 60 s). A scene lookup
--    loads each such minute's fixes, widened by the link gap, from the `(device, ts)` key.
--    The cell is no longer a column of `fixes` (it is computed from the position at ingest).
--
-- Existing rows are converted here; their values are rounded to 0.01 as ingest now does.

CREATE TABLE fixes_v5 (
    device_pk        INTEGER NOT NULL,
    ts               INTEGER NOT NULL,
    subject_pk       INTEGER,            -- the subject the fix was attributed to when received
    lat_e7           INTEGER,            -- NULL for fix = none
    lon_e7           INTEGER,
    accuracy_cm      REAL,               -- accuracy_m × 100
    source           INTEGER NOT NULL,   -- 0 none, 1 gps, 2 wifi, 3 lbs
    speed_cmps       REAL,               -- speed_mps × 100
    heading_cdeg     REAL,               -- heading_deg × 100
    battery_cpct     REAL,               -- battery_pct × 100
    flags            INTEGER NOT NULL,   -- bit0 tamper known, bit1 tamper, bit2 charging known, bit3 charging
    received_lag_us  INTEGER NOT NULL,   -- received_at − ts
    PRIMARY KEY (device_pk, ts)
) WITHOUT ROWID;

INSERT INTO fixes_v5
SELECT device_pk, ts, subject_pk, lat_e7, lon_e7,
       round(accuracy_m * 100), source, round(speed_mps * 100), round(heading_deg * 100),
       round(battery_pct * 100), flags, received_at - ts
FROM fixes ORDER BY device_pk, ts;

-- Crime-scene index, fine part (src/query/cells.rs): WITHOUT ROWID, so a lookup by cell and
-- minute reads only this table's pages.
CREATE TABLE fix_cells (
    cell       INTEGER NOT NULL,   -- H3 res-9 cell of the position
    minute     INTEGER NOT NULL,   -- ts ÷ 60,000,000 (µs), rounded down
    device_pk  INTEGER NOT NULL,
    PRIMARY KEY (cell, minute, device_pk)
) WITHOUT ROWID;

INSERT OR IGNORE INTO fix_cells
SELECT cell, ts / 60000000, device_pk FROM fixes WHERE cell IS NOT NULL ORDER BY 1, 2, 3;

DROP INDEX fixes_cell_ts;
DROP TABLE fixes;
ALTER TABLE fixes_v5 RENAME TO fixes;
