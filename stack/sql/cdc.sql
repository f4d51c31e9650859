-- What CDC needs in any source database, demo or not: Debezium's signal and heartbeat tables in a
-- schema of their own. Run by `featurectl stack up` and `featurectl db init` as the app role.
-- Idempotent and additive: nothing existing is dropped or altered.

CREATE SCHEMA IF NOT EXISTS cdc;

-- Debezium signal table: INSERT a row of type 'execute-snapshot' to trigger an incremental snapshot.
CREATE TABLE IF NOT EXISTS cdc.debezium_signal (
    id    varchar(42) PRIMARY KEY,
    type  varchar(32) NOT NULL,
    data  varchar(2048)
);

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
