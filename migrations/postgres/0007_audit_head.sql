-- The audit chain's head in a row of its own, so an append is one statement.
--
-- Why: an append took three round trips (take the advisory lock, read the head, insert),
-- a third of an audited location-at-time query's time at the median and most of it at p99.
-- The head has to be read after the lock is held, and a statement's snapshot is taken when
-- it starts, so the lock and the read could not share a statement. A row lock can: an
-- `UPDATE` that waited for another appender's lock on this row evaluates its `SET` against
-- the row that appender committed. The append (src/store/postgres_lawful.rs, `append_audit`)
-- updates this row to the new entry, computing its hash here from the canonical encoding
-- the server sends in two parts around the id (src/audit/chain.rs), inserts the entry from
-- the updated row in the same statement, and checks the hash in code before it commits.
--
-- The row lock serialises appenders as the advisory lock did, and is taken at the same point
-- of a transaction, so lock order is unchanged.
CREATE TABLE audit_head (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    entry      BIGINT  NOT NULL,   -- id of the newest entry; 0 when the chain is empty
    prev_hash  TEXT    NOT NULL,   -- its prev_hash
    hash       TEXT    NOT NULL    -- its hash (the genesis hash when the chain is empty)
);

-- An appender of an older build, still running during an upgrade, takes the advisory lock
-- and reads the head from `audit`; taking that lock here orders this copy after it.
SELECT pg_advisory_xact_lock(8386097743574360936);

INSERT INTO audit_head (id, entry, prev_hash, hash)
SELECT 1, COALESCE(h.id, 0), COALESCE(h.prev_hash, repeat('0', 64)), COALESCE(h.hash, repeat('0', 64))
FROM (SELECT 1) AS one
LEFT JOIN (SELECT id, prev_hash, hash FROM audit ORDER BY id DESC LIMIT 1) AS h ON true;

-- ... and its entries, appended without touching this row, move the head here. An append
-- of this build has already moved it, so for those the update matches no row.
CREATE FUNCTION audit_head_follows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_head SET entry = NEW.id, prev_hash = NEW.prev_hash, hash = NEW.hash
     WHERE id = 1 AND entry < NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_moves_head
    AFTER INSERT ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_head_follows();
