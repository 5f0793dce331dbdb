-- A count of the statements that have written `fixes`, kept by a statement trigger, so a
-- server can tell whether anyone else wrote fixes since its own last commit.
--
-- Why: with each group of fixes the segment indexer needs, per device, the newest stored
-- positioned fix before the group (src/store/postgres_lawful.rs, `index_segments`). A key
-- seek per device cost about as much as the insert itself. A server now remembers each
-- device's newest fix from its own writes and reads, and trusts that memory only when the
-- count its insert reads is exactly one past the count its last commit left: nobody else
-- (another server, the retention purge, a hand-written statement, an older build) wrote
-- in between.
--
-- The row's lock, taken by every writer and held to its commit, also puts writers of
-- fixes in order: reads a writer makes after its insert see every earlier writer's fixes,
-- so a long segment between two servers' fixes of one device is indexed by the later one.
CREATE TABLE fix_writes (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT  NOT NULL
);
INSERT INTO fix_writes (id, seq) VALUES (1, 0);

CREATE FUNCTION count_fix_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fix_writes SET seq = seq + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER fixes_count_writes
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON fixes
    FOR EACH STATEMENT EXECUTE FUNCTION count_fix_writes();
