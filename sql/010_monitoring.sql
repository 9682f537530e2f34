-- Monitoring (README, Monitoring): every nightly's metrics, kept over time in
-- a long, chartable shape, and the alerts raised when a run fails or a metric
-- crosses its warn or retrain level (schemas/contracts.json, monitoring).
CREATE TABLE {schema}.run_metrics (
    run_id      text             NOT NULL REFERENCES {schema}.runs (run_id) ON DELETE CASCADE,
    metric      text             NOT NULL,
    -- '' for the run as a whole; otherwise what the value is about, such as
    -- 'vs_training', 'vs_previous_day', 'version:3', 'version:3/arm:canary'
    -- or 'popularity'.
    segment     text             NOT NULL DEFAULT '',
    value       double precision NOT NULL,
    computed_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, metric, segment)
);
CREATE INDEX run_metrics_metric_idx ON {schema}.run_metrics (metric, segment);

CREATE TABLE {schema}.alerts (
    alert_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      text        REFERENCES {schema}.runs (run_id) ON DELETE SET NULL,
    raised_at   timestamptz NOT NULL DEFAULT now(),
    -- 'failed' for a failed run; 'warn' or 'retrain' for a crossed level.
    level       text        NOT NULL CHECK (level IN ('failed', 'warn', 'retrain')),
    metric      text,
    segment     text,
    value       double precision,
    threshold   double precision,
    message     text        NOT NULL,
    -- Where the alert was sent ('smtp', 'log', ...) and whether that worked.
    channel     text        NOT NULL,
    delivered   boolean     NOT NULL,
    delivery_error text
);
CREATE INDEX alerts_run_idx ON {schema}.alerts (run_id);

CREATE VIEW {bi}.run_metrics AS
SELECT m.run_id, r.logical_date, r.model_version, m.metric, m.segment, m.value
FROM {schema}.run_metrics m
JOIN {schema}.runs r USING (run_id);

CREATE VIEW {bi}.alerts AS
SELECT alert_id, run_id, raised_at, level, metric, segment, value, threshold, message,
       channel, delivered
FROM {schema}.alerts;
