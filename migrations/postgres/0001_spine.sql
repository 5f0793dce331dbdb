-- Spine schema: users and tokens, subjects, devices with assignment history, fixes.
-- Instants are BIGINT microseconds since the Unix epoch (UTC), as in the SQLite store.

CREATE TABLE devices (
    pk          BIGSERIAL PRIMARY KEY,
    id          TEXT   NOT NULL UNIQUE,           -- vendor serial
    subject_pk  BIGINT,                           -- current assignment (FK added below)
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT   NOT NULL,
    role        TEXT   NOT NULL CHECK (role IN ('device','officer','analyst','auditor','admin')),
    device_pk   BIGINT REFERENCES devices(pk),    -- a device token is bound to one tag; NULL = gateway
    token_hash  BYTEA  NOT NULL UNIQUE,           -- SHA-256 of the token; the token itself is never stored
    created_at  BIGINT NOT NULL
);

CREATE TABLE subjects (
    pk            BIGSERIAL PRIMARY KEY,
    id            TEXT   NOT NULL UNIQUE,         -- external reference, e.g. GTO-00017
    display_name  TEXT,
    borough       TEXT,
    officer_id    BIGINT REFERENCES users(id),    -- whose caseload the subject is on
    timezone      TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

ALTER TABLE devices ADD FOREIGN KEY (subject_pk) REFERENCES subjects(pk);

-- Every assignment a device has had; fixes keep their own subject_pk as well.
CREATE TABLE device_assignments (
    device_pk   BIGINT NOT NULL REFERENCES devices(pk),
    subject_pk  BIGINT NOT NULL REFERENCES subjects(pk),
    from_us     BIGINT NOT NULL,
    to_us       BIGINT,
    PRIMARY KEY (device_pk, from_us)
);
CREATE INDEX device_assignments_subject ON device_assignments(subject_pk, from_us);

-- One row per fix, keyed by (device, fix time): the key makes retries idempotent and
-- serves each device's history in time order. Narrow integer columns keep rows small.
CREATE TABLE fixes (
    device_pk    INTEGER  NOT NULL,
    ts           BIGINT   NOT NULL,
    subject_pk   INTEGER,            -- the subject the fix was attributed to when received
    lat_e7       INTEGER,            -- degrees × 1e7; NULL for fix = none
    lon_e7       INTEGER,
    accuracy_m   REAL,
    source       SMALLINT NOT NULL,  -- 0 none, 1 gps, 2 wifi, 3 lbs
    speed_mps    REAL,
    heading_deg  REAL,
    battery_pct  REAL,
    flags        SMALLINT NOT NULL,  -- bit0 tamper known, bit1 tamper, bit2 charging known, bit3 charging
    received_at  BIGINT   NOT NULL,
    cell         BIGINT,             -- H3 cell of the position (spatial-temporal index, SPEC §4)
    PRIMARY KEY (device_pk, ts)
);
