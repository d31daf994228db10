-- Subscribers' attributes (tags, language, time zone, when their browser
-- last posted them, whose push service they use) and named segments.
--
-- `push_service` is computed from the endpoint's host when a row is
-- written (`tocsin_protocol::push_service::PushService`); here, once, for
-- the rows already stored (endpoints are https:// URLs: the host is what
-- lies between the 8th character and the next '/').
-- Whether an app takes tags from browsers (NULL: the server's setting).
ALTER TABLE apps ADD COLUMN client_tags BIGINT;
ALTER TABLE subscriptions ADD COLUMN tags TEXT;
ALTER TABLE subscriptions ADD COLUMN language TEXT;
ALTER TABLE subscriptions ADD COLUMN time_zone TEXT;
ALTER TABLE subscriptions ADD COLUMN push_service TEXT NOT NULL DEFAULT 'other';
ALTER TABLE subscriptions ADD COLUMN last_seen_at BIGINT NOT NULL DEFAULT 0;
UPDATE subscriptions SET last_seen_at = updated_at, push_service = CASE
        WHEN lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) = 'fcm.googleapis.com' OR lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) LIKE '%.fcm.googleapis.com' OR lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) = 'android.googleapis.com' OR lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) LIKE '%.android.googleapis.com'
            THEN 'fcm'
        WHEN lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) = 'push.services.mozilla.com' OR lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) LIKE '%.push.services.mozilla.com'
            THEN 'mozilla'
        WHEN lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) = 'push.apple.com' OR lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) LIKE '%.push.apple.com'
            THEN 'apple'
        WHEN lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) = 'notify.windows.com' OR lower(substr(endpoint, 9, instr(substr(endpoint, 9) || '/', '/') - 1)) LIKE '%.notify.windows.com'
            THEN 'wns'
        ELSE 'other' END;

-- A segment: a named expression of an app's (`tocsin_audience::Expr`,
-- stored as it prints), evaluated each time a message aimed at it is sent.
CREATE TABLE segments (
    id INTEGER PRIMARY KEY,
    app_id BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    expression TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (app_id, name)
);

-- subscription.created carries the new attributes too.
DROP TRIGGER subscriptions_created;
CREATE TRIGGER subscriptions_created AFTER INSERT ON subscriptions
BEGIN
    INSERT INTO events (app_id, type, data, created_at) VALUES (NEW.app_id, 'subscription.created',
        json_object('subscriptionId', NEW.id, 'endpoint', NEW.endpoint, 'userId', NEW.user_id,
                    'topics', json(NEW.topics), 'tags', json(NEW.tags), 'language', NEW.language,
                    'timeZone', NEW.time_zone),
        NEW.created_at);
END;

-- A personal message's payload is rendered per subscription (text by
-- language, templates over tags): `payload` holds what it is rendered from.
ALTER TABLE messages ADD COLUMN personal BIGINT NOT NULL DEFAULT 0;
