-- Several apps on one server (issue 13). Every VAPID key, subscription and
-- message belongs to an app; what existed before is app 1, `default`.
-- Settings left NULL fall back to the server's flags.
CREATE TABLE apps (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    vapid_subject TEXT,
    user_signing_secret TEXT,
    cors_origins TEXT,
    created_at BIGINT NOT NULL
);
INSERT INTO apps (id, name, created_at) VALUES (1, 'default', CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT));
SELECT setval(pg_get_serial_sequence('apps', 'id'), 1);
ALTER TABLE vapid_keys ADD COLUMN app_id BIGINT NOT NULL DEFAULT 1 REFERENCES apps(id);
ALTER TABLE subscriptions ADD COLUMN app_id BIGINT NOT NULL DEFAULT 1 REFERENCES apps(id);
ALTER TABLE messages ADD COLUMN app_id BIGINT NOT NULL DEFAULT 1 REFERENCES apps(id);
-- NULL: a token for every app.
ALTER TABLE admin_tokens ADD COLUMN app_id BIGINT REFERENCES apps(id);
CREATE INDEX vapid_keys_app ON vapid_keys(app_id, is_current);
CREATE INDEX subscriptions_app ON subscriptions(app_id, id);
CREATE INDEX subscriptions_key ON subscriptions(vapid_key_id);
CREATE INDEX messages_app_created ON messages(app_id, created_at, id);
-- Idempotency keys are per app: stored as "<app id>:<key>".
UPDATE messages SET idempotency_key = '1:' || idempotency_key WHERE idempotency_key IS NOT NULL;
-- purged_totals' row id is the app's id (row 1 was the whole server, now `default`).
