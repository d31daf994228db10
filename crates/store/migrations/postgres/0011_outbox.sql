-- The outbox: events written in the transaction of what caused them (the
-- SSE stream reads them), and the webhooks told about them. Each event is
-- queued, in that same transaction, for every webhook of its app that
-- wants its type (webhook_queue); a webhook's delivery in progress is kept
-- on its row, fixed at its first claim, so that retries carry the same id
-- and body.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
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
-- the database itself, in the transaction that writes the event: once per
-- statement, over the rows it inserted (a page's events in one go).
CREATE FUNCTION tocsin_queue_events() RETURNS trigger AS $$
BEGIN
    INSERT INTO webhook_queue (webhook_id, event_id)
    SELECT w.id, n.id FROM new_events n JOIN webhooks w
      ON w.app_id = n.app_id AND w.events LIKE '%,' || n.type || ',%';
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_queue AFTER INSERT ON events REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION tocsin_queue_events();

-- subscription.created: the rows an upsert inserts (not those it updates)
-- are told by the database, in the upsert's own statement, at no extra
-- round trip.
CREATE FUNCTION tocsin_subscriptions_created() RETURNS trigger AS $$
BEGIN
    INSERT INTO events (app_id, type, data, created_at)
    SELECT n.app_id, 'subscription.created',
           json_build_object('subscriptionId', n.id, 'endpoint', n.endpoint, 'userId', n.user_id,
                             'topics', n.topics::json)::text,
           n.created_at
    FROM new_subscriptions n ORDER BY n.id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER subscriptions_created AFTER INSERT ON subscriptions REFERENCING NEW TABLE AS new_subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION tocsin_subscriptions_created();
