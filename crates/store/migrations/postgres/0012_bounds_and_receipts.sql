-- Values outside what the API now accepts, stored by earlier releases.
-- An expirationTime past the year 9999 (or one that wrapped to a negative
-- number) made its row unreadable: every broadcast stopped at its page.
UPDATE subscriptions SET expiration_time = NULL
 WHERE expiration_time < 0 OR expiration_time > 253402300799999;
-- A sendAt past the year 9999 could not be formatted as a date.
UPDATE messages SET send_at = 253402300799999 WHERE send_at > 253402300799999;
UPDATE messages SET send_at = 0 WHERE send_at < 0;

-- Shown and clicked are counted once per delivery: the first report of a
-- (message, recipient, kind) inserts its receipt, replays find it there.
-- `recipient` is `s:<subscription id>` when the service worker proves its
-- subscription, else `a:<client address>`.
CREATE TABLE event_receipts (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (message_id, recipient, kind)
);

-- Webhook deliveries are claimed round-robin: the least recently claimed
-- webhook with something due goes first.
ALTER TABLE webhooks ADD COLUMN claimed_at BIGINT NOT NULL DEFAULT 0;
