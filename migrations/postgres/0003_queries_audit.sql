-- Lawful location queries and the audit trail (SPEC §2 Lawful location queries, Audit; §4; §5).

-- Append-only, hash-chained audit entries (src/audit/chain.rs). `id` is assigned as the
-- head's id + 1 inside the appending transaction (under an advisory lock), never by a
-- sequence: a rolled-back transaction would burn a value and a gap is a break.
-- JSON columns are TEXT holding exactly what was hashed (no jsonb re-serialisation).
CREATE TABLE audit (
    id             BIGINT  PRIMARY KEY,
    at             BIGINT  NOT NULL,   -- µs since the epoch, server time
    actor          BIGINT  NOT NULL,   -- user id; 0 = the service itself (retention purge)
    actor_name     TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    action         TEXT    NOT NULL,   -- e.g. query.crime_scene, trail.read, retention.purge
    parameters     TEXT    NOT NULL,   -- JSON object
    justification  TEXT,               -- JSON {crime_ref, legal_basis, reason}; NULL when none
    subject_ids    TEXT    NOT NULL,   -- JSON array of the subject ids disclosed
    result_count   BIGINT  NOT NULL,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL
);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_actor ON audit(actor, id);

-- Crime-scene index, fine part: every positioned fix by (H3 res-9 cell, time); device_pk
-- is included so the candidate scan is index-only.
CREATE INDEX fixes_cell_ts ON fixes(cell, ts) INCLUDE (device_pk);

-- Crime-scene index, coarse part: one row per H3 res-7 cell crossed by a long segment
-- (consecutive positioned fixes of one device more than 500 m apart, at most an hour
-- apart), filled in the fix insert transaction. A superset of the linked long segments
-- for any max-gap-s up to an hour; stale rows only add candidates, never lose one.
CREATE TABLE fix_segments (
    cell       BIGINT  NOT NULL,
    t0         BIGINT  NOT NULL,   -- ts of the first fix
    t1         BIGINT  NOT NULL,   -- ts of the second fix
    device_pk  INTEGER NOT NULL,
    PRIMARY KEY (cell, t0, device_pk)
);
CREATE INDEX fix_segments_t1 ON fix_segments(t1);
