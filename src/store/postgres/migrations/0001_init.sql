-- deskprov schema, version 1. Applied at start inside one transaction; the version is recorded
-- in schema_version. JSON is stored as text, byte for byte as the embedded engine stores it.

-- Store-wide facts: the sealing key check ('key_check'), the dispatcher's cursor
-- ('sync_cursor'), the unprovisioned list ('unprovisioned').
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The change-log counter: one row, locked FOR UPDATE by every writer (writes are serialised
-- across servers on it).
CREATE TABLE counter (
    id  int PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL
);
INSERT INTO counter (id, seq) VALUES (1, 0);

-- Every record (groups, users, devices, ...), with the seq that last wrote it; a deleted record
-- stays as a tombstone (deleted, value = its key) so other servers catch up on the deletion.
CREATE TABLE records (
    key     text PRIMARY KEY,
    seq     bigint NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    value   text NOT NULL
);
CREATE INDEX records_by_seq ON records (seq);

-- The change log (SPEC section 1).
CREATE TABLE changes (
    seq   bigint PRIMARY KEY,
    grp   text,
    entry text NOT NULL
);
CREATE INDEX changes_by_group ON changes (grp, seq);

-- Every group's last group_seq.
CREATE TABLE group_seqs (
    grp text PRIMARY KEY,
    seq bigint NOT NULL
);

-- Phone observations. A check-in gets a new ord each time it is written, so every server
-- picks up the check-ins made on the others.
CREATE SEQUENCE checkin_ord;
CREATE TABLE checkins (
    mac     text PRIMARY KEY,
    value   text NOT NULL,
    ord     bigint NOT NULL DEFAULT nextval('checkin_ord'),
    written timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkins_by_ord ON checkins (ord);
CREATE INDEX checkins_by_written ON checkins (written);

CREATE TABLE sync_states (
    mac   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE uploads (
    mac  text NOT NULL,
    name text NOT NULL,
    meta text NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (mac, name)
);

CREATE TABLE provlog (
    mac   text NOT NULL,
    id    bigint NOT NULL,
    entry text NOT NULL,
    PRIMARY KEY (mac, id)
);
