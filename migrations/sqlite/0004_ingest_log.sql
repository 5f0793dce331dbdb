-- SQLite's ingest log (src/store/sqlite_tail.rs): one row per acknowledged group of fixes,
-- the fixes in one blob (a format byte, then postcard), appended in order. Compaction moves
-- them into `fixes` in large sorted chunks and deletes the rows it covered; at start the
-- rows still here are read back into memory.
CREATE TABLE fix_log (
    seq   INTEGER PRIMARY KEY,
    body  BLOB    NOT NULL
);
