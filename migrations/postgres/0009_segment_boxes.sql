-- The crime-scene lookup's long-segment candidates come from the H3 res-7 cells the
-- segment crosses, each several square kilometres: at 10 M fixes a 500 m / 24 h scene read
-- ~730 segment rows, and each became an island of fixes to load, though few of those
-- segments come near the scene. Each row now carries the bounding box of its segment
-- (latitude and longitude × 10^7), and the lookup keeps only rows whose box meets the
-- scene's (`SceneBox::meets_segment`, the rule the matcher applies to the loaded fixes).
--
-- A row stands for every segment of its device that starts at `t0` in its cell: a fix
-- that arrives late between `t0` and `t1` makes a shorter segment from the same start,
-- whose insert meets this row's key. The insert then widens the box to hold both (the
-- upsert in src/store/postgres_lawful.rs), so a box never leaves out a segment its row
-- stands for. NULL boxes (segments whose fixes are gone) are always kept.
ALTER TABLE fix_segments
    ADD COLUMN lat_lo INTEGER,
    ADD COLUMN lat_hi INTEGER,
    ADD COLUMN lon_lo INTEGER,
    ADD COLUMN lon_hi INTEGER;

-- Rows written before: the box of every positioned fix of the device from `t0` to `t1`,
-- which holds each segment the row may stand for.
UPDATE fix_segments s
SET (lat_lo, lat_hi, lon_lo, lon_hi) = (
    SELECT min(f.lat_e7), max(f.lat_e7), min(f.lon_e7), max(f.lon_e7)
    FROM fixes f
    WHERE f.device_pk = s.device_pk AND f.ts BETWEEN s.t0 AND s.t1
      AND f.lat_e7 IS NOT NULL AND f.lon_e7 IS NOT NULL);

-- The boxes join the key's included columns, so the lookup stays an index-only scan.
ALTER TABLE fix_segments
    DROP CONSTRAINT fix_segments_pkey,
    ADD CONSTRAINT fix_segments_pkey PRIMARY KEY (cell, t0, device_pk)
        INCLUDE (t1, lat_lo, lat_hi, lon_lo, lon_hi);
