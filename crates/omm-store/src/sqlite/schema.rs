//! Embedded SQLite migrations. Append new versions; never edit an applied one.

/// (version, name, SQL) in order.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial schema", V1),
    (2, "listing marks, reviews and their write-back", V2),
];

const V1: &str = r#"
CREATE TABLE exchange (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    api TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    config_json TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE bank (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    enabled_ratio REAL NOT NULL DEFAULT 1.0,
    exchange_id INTEGER UNIQUE REFERENCES exchange(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);

CREATE TABLE exchange_record (
    id INTEGER PRIMARY KEY,
    exchange_id INTEGER NOT NULL REFERENCES exchange(id) ON DELETE CASCADE,
    fetch_key TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (exchange_id, fetch_key)
);

CREATE TABLE bank_content (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bank_id INTEGER NOT NULL REFERENCES bank(id) ON DELETE CASCADE,
    imported_from_id INTEGER UNIQUE REFERENCES exchange_record(id) ON DELETE CASCADE,
    disable_until_ts INTEGER NOT NULL DEFAULT 1,
    original_media_uri TEXT,
    note TEXT,
    metadata_json TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX bank_content_bank_id ON bank_content (bank_id, id);

-- bank_id is denormalised (content never changes bank) so that change log entries of
-- cascaded deletes still know the bank, and start-up reads need no join.
CREATE TABLE content_signal (
    content_id INTEGER NOT NULL REFERENCES bank_content(id) ON DELETE CASCADE,
    signal_type TEXT NOT NULL,
    signal_value TEXT NOT NULL,
    bank_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (content_id, signal_type)
) WITHOUT ROWID;

CREATE TABLE exchange_fetch_status (
    exchange_id INTEGER PRIMARY KEY REFERENCES exchange(id) ON DELETE CASCADE,
    running_since INTEGER,
    last_complete_ts INTEGER,
    last_succeeded INTEGER,
    last_success_ts INTEGER,
    up_to_date INTEGER NOT NULL DEFAULT 0,
    checkpoint_json TEXT,
    checkpoint_ts INTEGER,
    item_count INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);

CREATE TABLE fetch_lease (
    exchange_id INTEGER PRIMARY KEY REFERENCES exchange(id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);

CREATE TABLE exchange_api_config (
    api TEXT PRIMARY KEY,
    credentials_json TEXT,
    updated_at INTEGER NOT NULL
);

CREATE TABLE signal_type_override (
    name TEXT PRIMARY KEY,
    enabled_ratio REAL NOT NULL
);

-- kind: 1 signal, 2 content, 3 bank, 4 exchange, 5 signal type; op: 1 upsert, 2 delete.
-- seq is the rowid (MAX + 1, cheaper than AUTOINCREMENT): it never goes backwards because
-- pruning always keeps the newest row, and a rolled-back seq was never visible to anyone.
CREATE TABLE change_log (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    op INTEGER NOT NULL,
    content_id INTEGER,
    bank_id INTEGER,
    exchange_id INTEGER,
    signal_type TEXT,
    signal_value TEXT,
    disable_until_ts INTEGER,
    name TEXT,
    ratio REAL,
    enabled INTEGER
);

CREATE TRIGGER content_signal_ins AFTER INSERT ON content_signal BEGIN
    INSERT INTO change_log (kind, op, content_id, bank_id, signal_type, signal_value)
    VALUES (1, 1, NEW.content_id, NEW.bank_id, NEW.signal_type, NEW.signal_value);
END;
CREATE TRIGGER content_signal_upd AFTER UPDATE ON content_signal
WHEN OLD.signal_value IS NOT NEW.signal_value OR OLD.signal_type IS NOT NEW.signal_type
  OR OLD.content_id IS NOT NEW.content_id BEGIN
    INSERT INTO change_log (kind, op, content_id, bank_id, signal_type, signal_value)
    VALUES (1, 2, OLD.content_id, OLD.bank_id, OLD.signal_type, OLD.signal_value);
    INSERT INTO change_log (kind, op, content_id, bank_id, signal_type, signal_value)
    VALUES (1, 1, NEW.content_id, NEW.bank_id, NEW.signal_type, NEW.signal_value);
END;
CREATE TRIGGER content_signal_del AFTER DELETE ON content_signal BEGIN
    INSERT INTO change_log (kind, op, content_id, bank_id, signal_type, signal_value)
    VALUES (1, 2, OLD.content_id, OLD.bank_id, OLD.signal_type, OLD.signal_value);
END;

CREATE TRIGGER bank_content_ins AFTER INSERT ON bank_content
WHEN NEW.disable_until_ts <> 1 BEGIN
    INSERT INTO change_log (kind, op, content_id, bank_id, disable_until_ts)
    VALUES (2, 1, NEW.id, NEW.bank_id, NEW.disable_until_ts);
END;
CREATE TRIGGER bank_content_upd AFTER UPDATE OF disable_until_ts ON bank_content
WHEN OLD.disable_until_ts IS NOT NEW.disable_until_ts BEGIN
    INSERT INTO change_log (kind, op, content_id, bank_id, disable_until_ts)
    VALUES (2, 1, NEW.id, NEW.bank_id, NEW.disable_until_ts);
END;
CREATE TRIGGER bank_content_del AFTER DELETE ON bank_content BEGIN
    INSERT INTO change_log (kind, op, content_id, bank_id) VALUES (2, 2, OLD.id, OLD.bank_id);
END;

CREATE TRIGGER bank_ins AFTER INSERT ON bank BEGIN
    INSERT INTO change_log (kind, op, bank_id, name, ratio, exchange_id)
    VALUES (3, 1, NEW.id, NEW.name, NEW.enabled_ratio, NEW.exchange_id);
END;
CREATE TRIGGER bank_upd AFTER UPDATE ON bank
WHEN OLD.name IS NOT NEW.name OR OLD.enabled_ratio IS NOT NEW.enabled_ratio
  OR OLD.exchange_id IS NOT NEW.exchange_id BEGIN
    INSERT INTO change_log (kind, op, bank_id, name, ratio, exchange_id)
    VALUES (3, 1, NEW.id, NEW.name, NEW.enabled_ratio, NEW.exchange_id);
END;
CREATE TRIGGER bank_del AFTER DELETE ON bank BEGIN
    INSERT INTO change_log (kind, op, bank_id) VALUES (3, 2, OLD.id);
END;

CREATE TRIGGER exchange_ins AFTER INSERT ON exchange BEGIN
    INSERT INTO change_log (kind, op, exchange_id, name, enabled)
    VALUES (4, 1, NEW.id, NEW.name, NEW.enabled);
END;
CREATE TRIGGER exchange_upd AFTER UPDATE ON exchange
WHEN OLD.name IS NOT NEW.name OR OLD.enabled IS NOT NEW.enabled BEGIN
    INSERT INTO change_log (kind, op, exchange_id, name, enabled)
    VALUES (4, 1, NEW.id, NEW.name, NEW.enabled);
END;
CREATE TRIGGER exchange_del AFTER DELETE ON exchange BEGIN
    INSERT INTO change_log (kind, op, exchange_id) VALUES (4, 2, OLD.id);
END;

CREATE TRIGGER signal_type_override_ins AFTER INSERT ON signal_type_override BEGIN
    INSERT INTO change_log (kind, op, name, ratio) VALUES (5, 1, NEW.name, NEW.enabled_ratio);
END;
CREATE TRIGGER signal_type_override_upd AFTER UPDATE ON signal_type_override
WHEN OLD.enabled_ratio IS NOT NEW.enabled_ratio OR OLD.name IS NOT NEW.name BEGIN
    INSERT INTO change_log (kind, op, name, ratio) VALUES (5, 1, NEW.name, NEW.enabled_ratio);
END;
CREATE TRIGGER signal_type_override_del AFTER DELETE ON signal_type_override BEGIN
    INSERT INTO change_log (kind, op, name) VALUES (5, 2, OLD.name);
END;
"#;

// Version 2: mark-and-sweep of full listings (`exchange_record.listing_id`), reviews and their
// write-back to exchanges. Reviews have no foreign key to the content: they outlive it (and
// pending write-backs are still delivered). Deliveries go with their exchange.
const V2: &str = r#"
ALTER TABLE exchange_record ADD COLUMN listing_id INTEGER;

CREATE TABLE content_review (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    content_id INTEGER NOT NULL,
    bank_id INTEGER NOT NULL,
    opinion TEXT NOT NULL CHECK (opinion IN ('true_positive', 'false_positive')),
    note TEXT,
    reviewer TEXT NOT NULL,
    signal_type TEXT,
    disabled_matching INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX content_review_content ON content_review (content_id, id);

CREATE TABLE review_delivery (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    review_id INTEGER NOT NULL REFERENCES content_review(id) ON DELETE CASCADE,
    exchange_id INTEGER NOT NULL REFERENCES exchange(id) ON DELETE CASCADE,
    record_key TEXT NOT NULL,
    record_metadata_json TEXT NOT NULL,
    signal_type TEXT NOT NULL,
    signal_value TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'unsupported')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_attempt_at INTEGER,
    next_attempt_at INTEGER,
    delivered_at INTEGER
);
CREATE INDEX review_delivery_review ON review_delivery (review_id);
CREATE INDEX review_delivery_exchange ON review_delivery (exchange_id);
CREATE INDEX review_delivery_due ON review_delivery (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
"#;
