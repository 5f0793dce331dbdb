-- Compliance: zones (with validity, never erased), absences, alerts and every state change.

CREATE TABLE zones (
    id          BIGSERIAL PRIMARY KEY,
    subject_pk  BIGINT  NOT NULL REFERENCES subjects(pk),
    kind        TEXT    NOT NULL CHECK (kind IN ('exclusion','inclusion')),
    name        TEXT    NOT NULL,
    geometry    TEXT    NOT NULL,   -- the GeoJSON-like geometry as posted (validated)
    schedule    TEXT,               -- SPEC §1 schedule JSON; NULL = always active
    grace_s     BIGINT  NOT NULL,
    valid_from  BIGINT  NOT NULL,
    valid_to    BIGINT,            -- set by DELETE: validity ends, the row stays
    created_at  BIGINT  NOT NULL,
    created_by  BIGINT  NOT NULL
);
CREATE INDEX zones_subject ON zones(subject_pk);

CREATE TABLE absences (
    id          BIGSERIAL PRIMARY KEY,
    subject_pk  BIGINT  NOT NULL REFERENCES subjects(pk),
    from_us     BIGINT  NOT NULL,
    to_us       BIGINT  NOT NULL,
    reason      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    created_by  BIGINT  NOT NULL
);
CREATE INDEX absences_subject ON absences(subject_pk);

CREATE TABLE alerts (
    id              BIGSERIAL PRIMARY KEY,
    type            TEXT    NOT NULL,
    subject_pk      BIGINT  NOT NULL REFERENCES subjects(pk),
    device_pk       BIGINT  NOT NULL REFERENCES devices(pk),
    zone_id         BIGINT  REFERENCES zones(id),
    started_at      BIGINT  NOT NULL,
    ended_at        BIGINT,
    detected_at     BIGINT  NOT NULL,
    detected_late   BIGINT  NOT NULL,   -- 0/1
    evidence_count  BIGINT  NOT NULL,
    evidence        TEXT    NOT NULL,   -- JSON array of fix times (µs)
    status          TEXT    NOT NULL CHECK (status IN ('open','acknowledged','closed','withdrawn')),
    outcome         TEXT,
    note            TEXT,
    withdrawn_reason TEXT,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX alerts_status ON alerts(status, id);
CREATE INDEX alerts_subject ON alerts(subject_pk, id);
CREATE INDEX alerts_device ON alerts(device_pk, started_at);

-- Every state change of an alert, in order (SPEC §3: every state change is kept).
CREATE TABLE alert_events (
    id        BIGSERIAL PRIMARY KEY,
    alert_id  BIGINT  NOT NULL REFERENCES alerts(id),
    at        BIGINT  NOT NULL,
    kind      TEXT    NOT NULL,   -- opened, updated, ended, acknowledged, closed, withdrawn
    actor     BIGINT,            -- user id; NULL = the engine
    detail    TEXT    NOT NULL    -- JSON
);
CREATE INDEX alert_events_alert ON alert_events(alert_id, id);
