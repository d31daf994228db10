-- Secrets the server makes for itself on first start and every node shares
-- (the key that signs each message's event token).
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
