-- Every claim of a shard or of a batch of retries gets a token of its own;
-- every write that belongs to the claim names it, so a worker whose lease
-- ran out (and whose work another claim took) records nothing.
ALTER TABLE message_shards ADD COLUMN lease_token TEXT;
ALTER TABLE retries ADD COLUMN lease_token TEXT;
CREATE INDEX retries_token ON retries(lease_token);
