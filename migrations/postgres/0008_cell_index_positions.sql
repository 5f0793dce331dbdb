-- The crime-scene index's fine part carries each fix's position, so the hit read drops
-- the fixes its hexagon cells hold beyond the disk the scene needs (src/query/cells.rs,
-- `HitDisk`) without leaving the index: for a 500 m scene the res-9 cover is 2.64 km² for
-- a 1.77 km² disk, and every hit outside made the second read load an island of fixes.
-- Built before the old index is dropped, so the hit read has an index throughout; takes
-- `fixes`' SHARE lock (ingest waits) while it builds: README "Operations".
CREATE INDEX fixes_cell_ts_at ON fixes (cell, ts) INCLUDE (device_pk, lat_e7, lon_e7);
DROP INDEX fixes_cell_ts;
