-- Tokens have a scope (admin, send or read) and remember when they were
-- last used (at most once a minute is written). Existing tokens stay admin.
ALTER TABLE admin_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE admin_tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX admin_tokens_name ON admin_tokens(name);
