-- `fix_segments_t1` served only the retention purge (`DELETE … WHERE t1 < cutoff`) and cost
-- 1.3–4.6 bytes per stored fix. The purge now reaches each cell's old rows through the
-- primary key `(cell, t0, device_pk)` instead (a segment's t0 is before its t1), as it does
-- for `fix_cells`.
DROP INDEX fix_segments_t1;
