-- deskprov schema, version 3: the unprovisioned list is shared by every server.

-- Unknown MACs that asked for files, whichever server saw them. Every server adds what it saw
-- since its last save in one transaction (per MAC: the count added, the latest sighting's
-- file, address and User-Agent kept), then trims the table to its newest 1,000 (by
-- last_seen), serialised with the other servers' saves on an advisory lock; creating a device
-- removes its MAC in the transaction that writes the device. `at` is the latest sighting's
-- time as the API shows it (RFC 3339, byte for byte), `ord` orders sightings of one instant.
-- A list an older version saved whole in meta ('unprovisioned') is moved in at start.
CREATE SEQUENCE unprovisioned_ord;
CREATE TABLE unprovisioned (
    mac        text PRIMARY KEY,
    file       text NOT NULL,
    ip         text NOT NULL,
    user_agent text NOT NULL,
    at         text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    count      bigint NOT NULL,
    ord        bigint NOT NULL DEFAULT nextval('unprovisioned_ord')
);
CREATE INDEX unprovisioned_by_last_seen ON unprovisioned (last_seen, ord);
