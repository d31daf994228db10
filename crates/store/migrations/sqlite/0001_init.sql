CREATE TABLE vapid_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_key TEXT NOT NULL UNIQUE,
    private_key TEXT NOT NULL,
    is_current INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE subscriptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL UNIQUE,
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    expiration_time BIGINT,
    user_id TEXT,
    topics TEXT NOT NULL DEFAULT '[]',
    vapid_key_id BIGINT NOT NULL REFERENCES vapid_keys(id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_user ON subscriptions(user_id);

CREATE TABLE subscription_topics (
    subscription_id BIGINT NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    topic TEXT NOT NULL,
    PRIMARY KEY (topic, subscription_id)
);
CREATE INDEX subscription_topics_sub ON subscription_topics(subscription_id);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    payload BLOB,
    target TEXT NOT NULL,
    ttl BIGINT NOT NULL,
    urgency TEXT,
    topic TEXT,
    send_at BIGINT,
    state TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    cursor BIGINT NOT NULL DEFAULT 0,
    cursor_end BIGINT NOT NULL DEFAULT 0,
    targeted BIGINT NOT NULL DEFAULT 0,
    delivered BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    gone BIGINT NOT NULL DEFAULT 0,
    expired BIGINT NOT NULL DEFAULT 0,
    pending_retry BIGINT NOT NULL DEFAULT 0,
    shown BIGINT NOT NULL DEFAULT 0,
    clicked BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX messages_state ON messages(state, send_at);
CREATE INDEX messages_created ON messages(created_at, id);

CREATE TABLE admin_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
