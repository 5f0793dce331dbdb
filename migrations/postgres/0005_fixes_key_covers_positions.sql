-- The crime-scene lookup reads, for each island of index hits, one device's fixes over a
-- few minutes (src/store/postgres_lawful.rs, `scene_rows`). Fixes arrive time-major (every
-- device each minute), so a device's consecutive rows lie on different heap pages: a
-- 500 m / 24 h scene at 10 M fixes read ~8,300 heap pages for ~8,300 rows, most of them
-- from outside shared buffers. The primary key now carries the columns those reads use,
-- so they are index-only scans over one contiguous key range per island. It costs the
-- key ~16 bytes a fix.
ALTER TABLE fixes
    DROP CONSTRAINT fixes_pkey,
    ADD CONSTRAINT fixes_pkey PRIMARY KEY (device_pk, ts) INCLUDE (subject_pk, lat_e7, lon_e7, accuracy_m);

-- The same for the long-segment hits: their key gains the segment's end, so they are read
-- from the index alone too (a bitmap heap scan read ~230 heap pages a scene).
ALTER TABLE fix_segments
    DROP CONSTRAINT fix_segments_pkey,
    ADD CONSTRAINT fix_segments_pkey PRIMARY KEY (cell, t0, device_pk) INCLUDE (t1);

-- An index-only scan reads the heap for any page the visibility map does not mark
-- all-visible, and only VACUUM sets those marks. By default autovacuum visits an
-- insert-only table after it grows by a fifth (2 M fixes at 10 M, most of a day at a
-- normal fleet's rate), so scenes over the last hours would read the heap again. Vacuum it
-- every 100,000 new fixes instead; each pass reads only the pages not yet marked.
ALTER TABLE fixes SET (autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 100000);
ALTER TABLE fix_segments SET (autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000);
