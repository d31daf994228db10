-- What purged messages had counted, so that /v1/stats totals survive the
-- retention purge (--retention-days).
CREATE TABLE purged_totals (
    id INTEGER PRIMARY KEY,
    messages BIGINT NOT NULL DEFAULT 0,
    delivered BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    removed BIGINT NOT NULL DEFAULT 0
);
INSERT INTO purged_totals (id) VALUES (1);
CREATE INDEX messages_finished ON messages(state, updated_at);
