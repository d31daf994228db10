-- A/B tests: a test's message is the parent of its variants' messages and
-- of the winner's (`MessageRules::ab_part` says which each is). Lists show
-- the parents only; a cancel reaches the parts.
ALTER TABLE messages ADD COLUMN parent_id TEXT;
CREATE INDEX messages_parent ON messages (parent_id) WHERE parent_id IS NOT NULL;
