-- What CDC needs in any source database, demo or not: Debezium's signal and heartbeat tables in a
-- schema of their own. Run by `featurectl stack up` and `featurectl db init` as the app role.
-- Idempotent and additive: nothing existing is dropped; the one change to an existing object widens the
-- signal table's data column (below).

CREATE SCHEMA IF NOT EXISTS cdc;

-- Debezium signal table: INSERT a row of type 'execute-snapshot' to trigger an incremental snapshot.
-- Debezium's documentation declares data varchar(2048); text lets `featurectl verify --repair` name
-- thousands of keys in one signal (one snapshot) instead of ~45 uuids per signal.
CREATE TABLE IF NOT EXISTS cdc.debezium_signal (
    id    varchar(42) PRIMARY KEY,
    type  varchar(32) NOT NULL,
    data  text
);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'cdc'
               AND table_name = 'debezium_signal' AND column_name = 'data' AND data_type <> 'text') THEN
        ALTER TABLE cdc.debezium_signal ALTER COLUMN data TYPE text;  -- no rewrite from varchar
    END IF;
END $$;

-- Written by the connector's heartbeat.action.query, so the replication slot keeps advancing
-- (and Postgres can recycle WAL) while the captured tables are idle.
CREATE TABLE IF NOT EXISTS cdc.debezium_heartbeat (
    id  integer PRIMARY KEY,
    ts  timestamptz NOT NULL
);

-- Least privilege for Debezium: write only its own bookkeeping tables. The signal table is also how
-- `featurectl snapshot` asks for an incremental snapshot, connected as this role.
GRANT USAGE ON SCHEMA cdc TO {debezium_user};
GRANT SELECT, INSERT, DELETE ON cdc.debezium_signal TO {debezium_user};
GRANT SELECT, INSERT, UPDATE ON cdc.debezium_heartbeat TO {debezium_user};
