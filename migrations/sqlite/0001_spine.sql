-- Spine schema: users and tokens, subjects, devices with assignment history, fixes.
-- Instants are INTEGER microseconds since the Unix epoch (UTC).

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('device','officer','analyst','auditor','admin')),
    device_pk   INTEGER REFERENCES devices(pk),   -- a device token is bound to one tag; NULL = gateway
    token_hash  BLOB    NOT NULL UNIQUE,          -- SHA-256 of the token; the token itself is never stored
    created_at  INTEGER NOT NULL
);

CREATE TABLE subjects (
    pk            INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,        -- external reference, e.g. GTO-00017
    display_name  TEXT,
    borough       TEXT,
    officer_id    INTEGER REFERENCES users(id),   -- whose caseload the subject is on
    timezone      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE devices (
    pk          INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,          -- vendor serial
    subject_pk  INTEGER REFERENCES subjects(pk),  -- current assignment
    created_at  INTEGER NOT NULL
);

-- Every assignment a device has had; fixes keep their own subject_pk as well.
CREATE TABLE device_assignments (
    device_pk   INTEGER NOT NULL REFERENCES devices(pk),
    subject_pk  INTEGER NOT NULL REFERENCES subjects(pk),
    from_us     INTEGER NOT NULL,
    to_us       INTEGER,
    PRIMARY KEY (device_pk, from_us)
) WITHOUT ROWID;
CREATE INDEX device_assignments_subject ON device_assignments(subject_pk, from_us);

-- One row per fix, keyed by (device, fix time): the key makes retries idempotent and
-- gives each device's history in time order. WITHOUT ROWID keeps the row in the key's
-- B-tree (no second lookup). Positions are degrees × 1e7.
CREATE TABLE fixes (
    device_pk    INTEGER NOT NULL,
    ts           INTEGER NOT NULL,
    subject_pk   INTEGER,            -- the subject the fix was attributed to when received
    lat_e7       INTEGER,            -- NULL for fix = none
    lon_e7       INTEGER,
    accuracy_m   REAL,
    source       INTEGER NOT NULL,   -- 0 none, 1 gps, 2 wifi, 3 lbs
    speed_mps    REAL,
    heading_deg  REAL,
    battery_pct  REAL,
    flags        INTEGER NOT NULL,   -- bit0 tamper known, bit1 tamper, bit2 charging known, bit3 charging
    received_at  INTEGER NOT NULL,
    cell         INTEGER,            -- H3 cell of the position (spatial-temporal index, SPEC §4)
    PRIMARY KEY (device_pk, ts)
) WITHOUT ROWID;
