-- Per app and UTC day (days since the epoch): subscriptions removed that
-- day (`unsubscribed`: by the browser, the API, a 404/410, expiry, a key
-- retired with force), and how many of those removed had been created on
-- that day (`removed_created`), so that "subscribed on day D" is the live
-- rows created on D plus these. A subscription replaced by its browser's
-- next one (oldEndpoint) is neither: the new row keeps its creation time.
CREATE TABLE daily_counts (
    app_id BIGINT NOT NULL,
    day BIGINT NOT NULL,
    unsubscribed BIGINT NOT NULL DEFAULT 0,
    removed_created BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, day)
);
