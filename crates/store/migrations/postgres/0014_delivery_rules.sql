-- Delivery rules: an app's (default time zone, quiet hours, frequency
-- caps, default rate; `tocsin_audience::rules::DeliveryRules` as JSON,
-- NULL for none) and a message's (a local time planned as waves of zones,
-- quiet hours ignored, caps bypassed, its tags, its rate;
-- `MessageRules` as JSON, NULL for none).
ALTER TABLE apps ADD COLUMN delivery_rules TEXT;
ALTER TABLE messages ADD COLUMN rules TEXT;
-- Deliveries quiet hours hold (as retries with the reason 'quiet-hours')
-- and deliveries dropped for a cap.
ALTER TABLE messages ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN capped BIGINT NOT NULL DEFAULT 0;
-- A throttled message's next free sending slot (ms since the epoch): each
-- node reserves its page's slots by moving it on, so that the nodes
-- together keep to the message's rate.
ALTER TABLE messages ADD COLUMN throttle_next BIGINT NOT NULL DEFAULT 0;
-- A message at a local time has shards per wave of zones: claimed from
-- the wave's instant, reaching its zones only.
ALTER TABLE message_shards ADD COLUMN wave BIGINT;
ALTER TABLE message_shards ADD COLUMN not_before BIGINT NOT NULL DEFAULT 0;
-- A subscription's latest deliveries, as the caps need them
-- (`SendHistory` as JSON), written in the page's checkpoint.
ALTER TABLE subscriptions ADD COLUMN send_history TEXT;
