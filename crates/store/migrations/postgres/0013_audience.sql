-- Subscribers' attributes (tags, language, time zone, when their browser
-- last posted them, whose push service they use) and named segments.
--
-- `push_service` is computed from the endpoint's host when a row is
-- written (`tocsin_protocol::push_service::PushService`); here, once, for
-- the rows already stored (endpoints are https:// URLs: the host is what
-- lies between the 8th character and the next '/').
--
-- PostgreSQL also keeps the tags as jsonb (`tags_j`, generated from the
-- text every store writes), which segment expressions read without
-- parsing the text again per row.
-- Whether an app takes tags from browsers (NULL: the server's setting).
ALTER TABLE apps ADD COLUMN client_tags BIGINT;
ALTER TABLE subscriptions ADD COLUMN tags TEXT;
ALTER TABLE subscriptions ADD COLUMN tags_j JSONB GENERATED ALWAYS AS (tags::jsonb) STORED;
ALTER TABLE subscriptions ADD COLUMN language TEXT;
ALTER TABLE subscriptions ADD COLUMN time_zone TEXT;
ALTER TABLE subscriptions ADD COLUMN push_service TEXT NOT NULL DEFAULT 'other';
ALTER TABLE subscriptions ADD COLUMN last_seen_at BIGINT NOT NULL DEFAULT 0;
UPDATE subscriptions SET last_seen_at = updated_at, push_service = CASE
        WHEN lower(split_part(substr(endpoint, 9), '/', 1)) = 'fcm.googleapis.com' OR lower(split_part(substr(endpoint, 9), '/', 1)) LIKE '%.fcm.googleapis.com' OR lower(split_part(substr(endpoint, 9), '/', 1)) = 'android.googleapis.com' OR lower(split_part(substr(endpoint, 9), '/', 1)) LIKE '%.android.googleapis.com'
            THEN 'fcm'
        WHEN lower(split_part(substr(endpoint, 9), '/', 1)) = 'push.services.mozilla.com' OR lower(split_part(substr(endpoint, 9), '/', 1)) LIKE '%.push.services.mozilla.com'
            THEN 'mozilla'
        WHEN lower(split_part(substr(endpoint, 9), '/', 1)) = 'push.apple.com' OR lower(split_part(substr(endpoint, 9), '/', 1)) LIKE '%.push.apple.com'
            THEN 'apple'
        WHEN lower(split_part(substr(endpoint, 9), '/', 1)) = 'notify.windows.com' OR lower(split_part(substr(endpoint, 9), '/', 1)) LIKE '%.notify.windows.com'
            THEN 'wns'
        ELSE 'other' END;

-- A segment: a named expression of an app's (`tocsin_audience::Expr`,
-- stored as it prints), evaluated each time a message aimed at it is sent.
CREATE TABLE segments (
    id BIGSERIAL PRIMARY KEY,
    app_id BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    expression TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (app_id, name)
);

-- subscription.created carries the new attributes too.
CREATE OR REPLACE FUNCTION tocsin_subscriptions_created() RETURNS trigger AS $$
BEGIN
    INSERT INTO events (app_id, type, data, created_at)
    SELECT n.app_id, 'subscription.created',
           json_build_object('subscriptionId', n.id, 'endpoint', n.endpoint, 'userId', n.user_id,
                             'topics', n.topics::json, 'tags', n.tags::json, 'language', n.language,
                             'timeZone', n.time_zone)::text,
           n.created_at
    FROM new_subscriptions n ORDER BY n.id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

-- A personal message's payload is rendered per subscription (text by
-- language, templates over tags): `payload` holds what it is rendered from.
ALTER TABLE messages ADD COLUMN personal BIGINT NOT NULL DEFAULT 0;

