-- What a message's payload is (classic, declarative or auto), and for auto
-- the declarative payload that Apple's push service gets.
ALTER TABLE messages ADD COLUMN format TEXT NOT NULL DEFAULT 'classic';
ALTER TABLE messages ADD COLUMN apple_payload BYTEA;
