-- Compliance: zones (with validity, never erased), absences, alerts and every state change.

CREATE TABLE zones (
    id          INTEGER PRIMARY KEY,
    subject_pk  INTEGER NOT NULL REFERENCES subjects(pk),
    kind        TEXT    NOT NULL CHECK (kind IN ('exclusion','inclusion')),
    name        TEXT    NOT NULL,
    geometry    TEXT    NOT NULL,   -- the GeoJSON-like geometry as posted (validated)
    schedule    TEXT,               -- SPEC §1 schedule JSON; NULL = always active
    grace_s     INTEGER NOT NULL,
    valid_from  INTEGER NOT NULL,
    valid_to    INTEGER,            -- set by DELETE: validity ends, the row stays
    created_at  INTEGER NOT NULL,
    created_by  INTEGER NOT NULL
);
CREATE INDEX zones_subject ON zones(subject_pk);

CREATE TABLE absences (
    id          INTEGER PRIMARY KEY,
    subject_pk  INTEGER NOT NULL REFERENCES subjects(pk),
    from_us     INTEGER NOT NULL,
    to_us       INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  INTEGER NOT NULL
);
CREATE INDEX absences_subject ON absences(subject_pk);

CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    type            TEXT    NOT NULL,
    subject_pk      INTEGER NOT NULL REFERENCES subjects(pk),
    device_pk       INTEGER NOT NULL REFERENCES devices(pk),
    zone_id         INTEGER REFERENCES zones(id),
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    detected_at     INTEGER NOT NULL,
    detected_late   INTEGER NOT NULL,   -- 0/1
    evidence_count  INTEGER NOT NULL,
    evidence        TEXT    NOT NULL,   -- JSON array of fix times (µs)
    status          TEXT    NOT NULL CHECK (status IN ('open','acknowledged','closed','withdrawn')),
    outcome         TEXT,
    note            TEXT,
    withdrawn_reason TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX alerts_status ON alerts(status, id);
CREATE INDEX alerts_subject ON alerts(subject_pk, id);
CREATE INDEX alerts_device ON alerts(device_pk, started_at);

-- Every state change of an alert, in order (SPEC §3: every state change is kept).
CREATE TABLE alert_events (
    id        INTEGER PRIMARY KEY,
    alert_id  INTEGER NOT NULL REFERENCES alerts(id),
    at        INTEGER NOT NULL,
    kind      TEXT    NOT NULL,   -- opened, updated, ended, acknowledged, closed, withdrawn
    actor     INTEGER,            -- user id; NULL = the engine
    detail    TEXT    NOT NULL    -- JSON
);
CREATE INDEX alert_events_alert ON alert_events(alert_id, id);
