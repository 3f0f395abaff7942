-- deskprov schema, version 2: manual syncs reach the dispatcher from any server, and every
-- server follows the sync states the dispatcher saves.

-- A manual sync (POST /devices/{mac}/sync) requested on any server, committed before the
-- answer; the dispatcher takes the rows (DELETE ... RETURNING) in the transaction that saves
-- the resulting sync states, so a request is taken exactly once, across failovers too.
CREATE TABLE sync_requests (
    id        bigserial PRIMARY KEY,
    mac       text NOT NULL,
    revision  bigint NOT NULL,
    reboot    boolean NOT NULL,
    requested timestamptz NOT NULL DEFAULT now()
);

-- A sync state gets a new ord each time it is written (as a check-in does), so the servers
-- that do not dispatch show what the dispatcher knows.
CREATE SEQUENCE sync_state_ord;
ALTER TABLE sync_states
    ADD COLUMN ord bigint NOT NULL DEFAULT nextval('sync_state_ord'),
    ADD COLUMN written timestamptz NOT NULL DEFAULT now();
CREATE INDEX sync_states_by_ord ON sync_states (ord);
CREATE INDEX sync_states_by_written ON sync_states (written);
