-- One example of each reason's failures (which subscription, at which push
-- service, and what happened): the first one recorded.
ALTER TABLE message_failures ADD COLUMN example TEXT;
