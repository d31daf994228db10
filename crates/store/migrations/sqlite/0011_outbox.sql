-- The outbox: events written in the transaction of what caused them (the
-- SSE stream reads them), and the webhooks told about them. Each event is
-- queued, in that same transaction, for every webhook of its app that
-- wants its type (webhook_queue); a webhook's delivery in progress is kept
-- on its row, fixed at its first claim, so that retries carry the same id
-- and body.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_app_id ON events (app_id, id);
CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    app_id BIGINT NOT NULL,
    url TEXT NOT NULL,
    -- The wanted types, as ",a,b,": a type matches with LIKE '%,type,%'.
    events TEXT NOT NULL,
    description TEXT,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    failing_since BIGINT,
    last_error TEXT,
    delivery_id TEXT,
    delivery_body TEXT,
    -- The ids of the events in the delivery, as a JSON array.
    delivery_events TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    first_attempt_at BIGINT,
    next_at BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX webhooks_app_id ON webhooks (app_id);

CREATE TABLE webhook_queue (
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id BIGINT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX webhook_queue_event_id ON webhook_queue (event_id);

-- Each event is queued for the webhooks of its app that want its type, by
-- the database itself, in the transaction that writes the event.
CREATE TRIGGER events_queue AFTER INSERT ON events
BEGIN
    INSERT INTO webhook_queue (webhook_id, event_id)
    SELECT w.id, NEW.id FROM webhooks w
    WHERE w.app_id = NEW.app_id AND w.events LIKE '%,' || NEW.type || ',%';
END;

-- subscription.created: a row the upsert inserts (not one it updates) is
-- told by the database, in the upsert's own statement, at no extra round trip.
CREATE TRIGGER subscriptions_created AFTER INSERT ON subscriptions
BEGIN
    INSERT INTO events (app_id, type, data, created_at) VALUES (NEW.app_id, 'subscription.created',
        json_object('subscriptionId', NEW.id, 'endpoint', NEW.endpoint, 'userId', NEW.user_id,
                    'topics', json(NEW.topics)),
        NEW.created_at);
END;
