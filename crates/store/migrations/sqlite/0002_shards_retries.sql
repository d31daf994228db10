-- A message being sent is split into shards: ranges of subscription ids that
-- any node may claim under a lease that expires, and walk with a cursor.
CREATE TABLE message_shards (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    shard INTEGER NOT NULL,
    start_after BIGINT NOT NULL,
    end_at BIGINT NOT NULL,
    cursor BIGINT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    delivered BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, shard)
);
CREATE INDEX message_shards_open ON message_shards(done, lease_until);

-- Deliveries waiting for another attempt (429, 5xx, timeouts…).
CREATE TABLE retries (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    subscription_id BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    due_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, subscription_id)
);
CREATE INDEX retries_due ON retries(due_at);

-- Failures of a message by reason.
CREATE TABLE message_failures (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    reason TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (message_id, reason)
);
