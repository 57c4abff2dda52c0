-- funnel_daily: one row per campaign, UTC day and funnel step, with the drop-off from the step
-- before it (LAG over step_sequence within the campaign-day). The first step has no previous step:
-- its previous_step_count, drop_off_count and drop_off_rate are NULL. drop_off_rate is NULL when
-- the previous step had no contacts; a negative drop-off means a step counted more contacts than
-- the one before it. Portable SQL: runs on DuckDB and Snowflake.
WITH steps AS (
    SELECT
        campaign_id,
        extraction_date,
        step_sequence,
        step_id,
        step_name,
        contact_count,
        LAG(contact_count) OVER (
            PARTITION BY campaign_id, extraction_date
            ORDER BY step_sequence
        ) AS previous_step_count
    FROM fact_predictive_journey
)
SELECT
    campaign_id,
    extraction_date,
    step_sequence,
    step_id,
    step_name,
    contact_count,
    previous_step_count,
    previous_step_count - contact_count AS drop_off_count,
    CAST(previous_step_count - contact_count AS DOUBLE) / NULLIF(previous_step_count, 0) AS drop_off_rate
FROM steps
