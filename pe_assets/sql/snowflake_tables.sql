-- pe_assets tables on Snowflake. GENERATED from pe_assets/schemas.py (the Pandera models):
--   python -m pe_assets.warehouse.snowflake_warehouse > pe_assets/sql/snowflake_tables.sql
-- The pipeline runs these itself (CREATE TABLE IF NOT EXISTS, then ALTER TABLE ... ADD COLUMN for
-- columns a newer model adds); they are here for review and for creating the tables by hand.
-- Timestamps are naive UTC (TIMESTAMP_NTZ); extraction_date is the UTC day of the partition.

CREATE TABLE IF NOT EXISTS dim_predictive_campaign (
    campaign_id VARCHAR,
    campaign_name VARCHAR,
    status VARCHAR,
    scorecard_id VARCHAR,
    created_date TIMESTAMP_NTZ,
    updated_date TIMESTAMP_NTZ,
    listed_at TIMESTAMP_NTZ
);

CREATE TABLE IF NOT EXISTS fact_journey_step (
    campaign_id VARCHAR,
    extraction_date DATE,
    step_id VARCHAR,
    step_name VARCHAR,
    step_sequence NUMBER(38,0),
    contact_count NUMBER(38,0),
    conversion_rate FLOAT,
    average_score FLOAT,
    exit_reason VARCHAR,
    scorecard_id VARCHAR,
    extracted_at TIMESTAMP_NTZ,
    load_timestamp TIMESTAMP_NTZ
)
CLUSTER BY (extraction_date, campaign_id);

CREATE TABLE IF NOT EXISTS rejected_journey_step (
    campaign_id VARCHAR,
    extraction_date DATE,
    step_sequence NUMBER(38,0),
    reason VARCHAR,
    raw_step VARCHAR,
    extracted_at TIMESTAMP_NTZ,
    load_timestamp TIMESTAMP_NTZ
)
CLUSTER BY (extraction_date, campaign_id);

CREATE TABLE IF NOT EXISTS fact_scorecard_performance (
    scorecard_id VARCHAR,
    extraction_date DATE,
    scorecard_name VARCHAR,
    model_version VARCHAR,
    retraining_timestamp TIMESTAMP_NTZ,
    precision FLOAT,
    recall FLOAT,
    f1_score FLOAT,
    auc FLOAT,
    actual_conversion_rate FLOAT,
    predicted_conversion_rate FLOAT,
    pending_backfill BOOLEAN,
    extracted_at TIMESTAMP_NTZ
)
CLUSTER BY (extraction_date);

CREATE TABLE IF NOT EXISTS fact_scorecard_score_distribution (
    scorecard_id VARCHAR,
    extraction_date DATE,
    extracted_at TIMESTAMP_NTZ,
    model_version VARCHAR,
    bucket VARCHAR,
    bucket_lower FLOAT,
    bucket_upper FLOAT,
    contact_count NUMBER(38,0)
)
CLUSTER BY (extraction_date);

CREATE TABLE IF NOT EXISTS fact_predictive_journey (
    load_timestamp TIMESTAMP_NTZ,
    campaign_id VARCHAR,
    scorecard_id VARCHAR,
    extraction_date DATE,
    step_id VARCHAR,
    step_name VARCHAR,
    step_sequence NUMBER(38,0),
    contact_count NUMBER(38,0),
    conversion_rate FLOAT,
    average_score FLOAT,
    exit_reason VARCHAR,
    precision FLOAT,
    recall FLOAT,
    f1_score FLOAT,
    actual_conversion_rate FLOAT,
    model_version VARCHAR,
    pending_backfill BOOLEAN
)
CLUSTER BY (extraction_date, campaign_id);
