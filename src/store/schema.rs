//! The schema: every migration in order (`PRAGMA user_version` counts those applied).

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    expiring_alerted TEXT,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    data TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pass INTEGER NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    device_id TEXT,
    summary TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX events_at ON events(at);
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events(id),
    channel TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ms INTEGER NOT NULL,
    lease_until_ms INTEGER,
    last_error TEXT,
    delivered_ms INTEGER,
    UNIQUE (event_id, channel)
);
CREATE INDEX outbox_pending ON outbox(channel, delivered_ms, next_try_ms);
"#,
    r#"
ALTER TABLE devices ADD COLUMN last_handshake TEXT;
"#,
    r#"
ALTER TABLE outbox ADD COLUMN escalated INTEGER NOT NULL DEFAULT 0;
"#,
    // A delivery its channel refused for good (a 4xx other than 408/429): out of the queue, kept
    // for the record, never retried, never blocking what comes after it.
    r#"
ALTER TABLE outbox ADD COLUMN dead_ms INTEGER;
"#,
    // A repeated change of one device, held to go out with the others of its window as one
    // message (`[alerts] coalesce_window`); 0 for the row that opened the window.
    r#"
ALTER TABLE outbox ADD COLUMN coalesced INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_coalesce ON outbox(channel, created_ms);
"#,
    // What `/metrics` shows, kept up to date by the writes themselves: a scrape reads a few rows,
    // whatever the size of the log and the outbox (F16).
    r#"
CREATE TABLE event_counts (kind TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO event_counts SELECT kind, COUNT(*) FROM events GROUP BY kind;
CREATE TRIGGER events_counted AFTER INSERT ON events BEGIN
    INSERT INTO event_counts (kind, n) VALUES (NEW.kind, 1)
        ON CONFLICT (kind) DO UPDATE SET n = n + 1;
END;
CREATE TABLE delivery_counts (
    channel TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO delivery_counts
    SELECT channel, SUM(delivered_ms IS NOT NULL), SUM(attempts - (delivered_ms IS NOT NULL)),
           SUM(delivered_ms IS NULL AND dead_ms IS NULL)
    FROM outbox GROUP BY channel;
CREATE TRIGGER outbox_counted_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO delivery_counts (channel) VALUES (NEW.channel) ON CONFLICT (channel) DO NOTHING;
    UPDATE delivery_counts SET
        delivered = delivered + (NEW.delivered_ms IS NOT NULL),
        failed = failed + NEW.attempts - (NEW.delivered_ms IS NOT NULL),
        pending = pending + (NEW.delivered_ms IS NULL AND NEW.dead_ms IS NULL)
    WHERE channel = NEW.channel;
END;
CREATE TRIGGER outbox_counted_delete AFTER DELETE ON outbox BEGIN
    UPDATE delivery_counts SET
        delivered = delivered - (OLD.delivered_ms IS NOT NULL),
        failed = failed - (OLD.attempts - (OLD.delivered_ms IS NOT NULL)),
        pending = pending - (OLD.delivered_ms IS NULL AND OLD.dead_ms IS NULL)
    WHERE channel = OLD.channel;
END;
CREATE TRIGGER outbox_counted_update AFTER UPDATE OF attempts, delivered_ms, dead_ms, channel ON outbox BEGIN
    UPDATE delivery_counts SET
        delivered = delivered - (OLD.delivered_ms IS NOT NULL),
        failed = failed - (OLD.attempts - (OLD.delivered_ms IS NOT NULL)),
        pending = pending - (OLD.delivered_ms IS NULL AND OLD.dead_ms IS NULL)
    WHERE channel = OLD.channel;
    INSERT INTO delivery_counts (channel) VALUES (NEW.channel) ON CONFLICT (channel) DO NOTHING;
    UPDATE delivery_counts SET
        delivered = delivered + (NEW.delivered_ms IS NOT NULL),
        failed = failed + NEW.attempts - (NEW.delivered_ms IS NOT NULL),
        pending = pending + (NEW.delivered_ms IS NULL AND NEW.dead_ms IS NULL)
    WHERE channel = NEW.channel;
END;
"#,
    // The guard (`[guard]`): the devices this server's owner approved (each change is also a
    // `guard.approved` / `guard.revoked` event in the chain), and the sources it dropped, with
    // when each was last alerted (`guard.blocked`, once per device and hour).
    r#"
CREATE TABLE guard_approved (device_id TEXT PRIMARY KEY, at TEXT NOT NULL, by TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE guard_blocked (
    addr TEXT PRIMARY KEY,
    device_id TEXT,
    first_ms INTEGER NOT NULL,
    alerted_ms INTEGER,
    packets INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"#,
    // An approval is of a device with its node key (a key swapped in is not approved).
    r#"
ALTER TABLE guard_approved ADD COLUMN node_key TEXT NOT NULL DEFAULT '';
"#,
    // An approval covers the routes the device had then (JSON list); a route added later waits
    // for the next approval.
    r#"
ALTER TABLE guard_approved ADD COLUMN routes TEXT NOT NULL DEFAULT '[]';
"#,
    // The web view's timeline pages through the log newest first, filtered by kind, severity or
    // device: each filter walks its own index, so a page costs the same at any size of the log.
    r#"
CREATE INDEX events_kind ON events(kind, id);
CREATE INDEX events_severity ON events(severity, id);
CREATE INDEX events_device ON events(device_id, id);
"#,
    // Each `[[export]]`'s cursor: the last event it handed to its collector.
    r#"
CREATE TABLE export_cursor (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL, at_ms INTEGER NOT NULL) WITHOUT ROWID;
"#,
    // A stream export's batch in flight: the last event ID of a batch handed to a collector that
    // cannot be read back, set before the hand-over and cleared with the cursor after it.
    r#"
ALTER TABLE export_cursor ADD COLUMN inflight INTEGER;
"#,
];
