-- funnel_daily_snapshot: one row per campaign and UTC day. contacts_in is the first step's count,
-- converted the last step's, conversion_rate converted / contacts_in (NULL when nobody entered).
-- The largest drop-off is the step losing the most contacts from the step before it (ties: the
-- earliest step); its columns are NULL when no step lost contacts. Built on funnel_daily.
-- Portable SQL: runs on DuckDB and Snowflake.
WITH ranked AS (
    SELECT
        campaign_id,
        extraction_date,
        step_sequence,
        step_id,
        step_name,
        contact_count,
        drop_off_count,
        drop_off_rate,
        ROW_NUMBER() OVER (
            PARTITION BY campaign_id, extraction_date
            ORDER BY step_sequence
        ) AS position_from_start,
        ROW_NUMBER() OVER (
            PARTITION BY campaign_id, extraction_date
            ORDER BY step_sequence DESC
        ) AS position_from_end,
        ROW_NUMBER() OVER (
            PARTITION BY campaign_id, extraction_date
            ORDER BY CASE WHEN drop_off_count > 0 THEN drop_off_count END DESC NULLS LAST, step_sequence
        ) AS drop_off_rank
    FROM funnel_daily
),
days AS (
    SELECT
        campaign_id,
        extraction_date,
        COUNT(*) AS step_count,
        MAX(CASE WHEN position_from_start = 1 THEN contact_count END) AS contacts_in,
        MAX(CASE WHEN position_from_end = 1 THEN contact_count END) AS converted,
        MAX(CASE WHEN drop_off_rank = 1 AND drop_off_count > 0 THEN step_sequence END)
            AS largest_drop_off_step_sequence,
        MAX(CASE WHEN drop_off_rank = 1 AND drop_off_count > 0 THEN step_id END) AS largest_drop_off_step_id,
        MAX(CASE WHEN drop_off_rank = 1 AND drop_off_count > 0 THEN step_name END) AS largest_drop_off_step_name,
        MAX(CASE WHEN drop_off_rank = 1 AND drop_off_count > 0 THEN drop_off_count END) AS largest_drop_off_count,
        MAX(CASE WHEN drop_off_rank = 1 AND drop_off_count > 0 THEN drop_off_rate END) AS largest_drop_off_rate
    FROM ranked
    GROUP BY campaign_id, extraction_date
)
SELECT
    campaign_id,
    extraction_date,
    step_count,
    contacts_in,
    converted,
    CAST(converted AS DOUBLE) / NULLIF(contacts_in, 0) AS conversion_rate,
    largest_drop_off_step_sequence,
    largest_drop_off_step_id,
    largest_drop_off_step_name,
    largest_drop_off_count,
    largest_drop_off_rate
FROM days
