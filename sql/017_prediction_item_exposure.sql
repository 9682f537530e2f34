-- Per version and item: the lists the item is in and the sum of its ranks in them,
-- counted by the publisher as it loads the version. The monitor's coverage and
-- exposure concentration and the run report's most recommended items read these
-- rows instead of unnesting every list of the version (500,000,000 entries at
-- 10,000,000 users and K = 50). Versions loaded by earlier releases have none; their
-- readers count from the lists, as before. Rows go when their version is dropped.
CREATE TABLE {schema}.prediction_item_exposure (
    publish_id bigint NOT NULL,
    item_id    bigint NOT NULL,
    users      bigint NOT NULL CHECK (users > 0),
    rank_sum   bigint NOT NULL CHECK (rank_sum >= users),
    PRIMARY KEY (publish_id, item_id)
);
