-- fact_predictive_journey for one window of days: every fact_journey_step row joined to the LATEST
-- snapshot (greatest extracted_at) of its scorecard for the same day; no snapshot: NULL metrics.
-- (scorecard_id, extraction_date, extracted_at) is unique in fact_scorecard_performance, so
-- "latest" is never a tie. Parameters, in order: the window's first day and the day after its last
-- (for the snapshots), load_timestamp, the window again (for the steps). Portable SQL: runs on
-- DuckDB and Snowflake.
WITH latest_snapshot AS (
    SELECT
        scorecard_id,
        extraction_date,
        precision,
        recall,
        f1_score,
        actual_conversion_rate,
        model_version,
        pending_backfill
    FROM fact_scorecard_performance
    WHERE extraction_date >= CAST(? AS DATE) AND extraction_date < CAST(? AS DATE)
    QUALIFY ROW_NUMBER() OVER (PARTITION BY scorecard_id, extraction_date ORDER BY extracted_at DESC) = 1
)
SELECT
    CAST(? AS TIMESTAMP) AS load_timestamp,
    s.campaign_id,
    s.scorecard_id,
    s.extraction_date,
    s.step_id,
    s.step_name,
    s.step_sequence,
    s.contact_count,
    s.conversion_rate,
    s.average_score,
    s.exit_reason,
    l.precision,
    l.recall,
    l.f1_score,
    l.actual_conversion_rate,
    l.model_version,
    l.pending_backfill
FROM fact_journey_step s
LEFT JOIN latest_snapshot l
    ON l.scorecard_id = s.scorecard_id AND l.extraction_date = s.extraction_date
WHERE s.extraction_date >= CAST(? AS DATE) AND s.extraction_date < CAST(? AS DATE)
ORDER BY s.campaign_id, s.extraction_date, s.step_sequence
