-- `received_at` is kept as its lag after `ts` in whole milliseconds, not microseconds
-- (src/model/fix.rs `received_after`: ingest rounds the lag to the millisecond, half up).
-- A lag of seconds then takes two bytes instead of three or four, and a backfill's lag of
-- days four instead of six: on data loaded days after its fix times this was the
-- difference between 81.4 bytes a fix and the 80 of the target (README Benchmarks).
-- Existing lags are rounded the same way (integer arithmetic: floor((lag + 500) / 1000)),
-- moving each receipt time by at most half a millisecond; on a large file this rewrites
-- the table's rows once, at the first start of this version.
ALTER TABLE fixes RENAME COLUMN received_lag_us TO received_lag_ms;
UPDATE fixes SET received_lag_ms =
    CASE WHEN received_lag_ms >= -500 THEN (received_lag_ms + 500) / 1000
         ELSE -((499 - received_lag_ms) / 1000) END;
