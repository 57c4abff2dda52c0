-- pe_assets tables on Snowflake. GENERATED from pe_assets/schemas.py (the Pandera models):
--   python -m pe_assets.warehouse.snowflake_warehouse > pe_assets/sql/snowflake_tables.sql
-- The pipeline runs these itself (CREATE TABLE IF NOT EXISTS, then ALTER TABLE ... ADD COLUMN for
-- columns a newer model adds); they are here for review and for creating the tables by hand.
-- Timestamps are naive UTC (TIMESTAMP_NTZ); extraction_date is the UTC day of the partition.

CREATE TABLE IF NOT EXISTS dim_predictive_campaign (
    campaign_id VARCHAR NOT NULL,
    campaign_name VARCHAR,
    status VARCHAR NOT NULL,
    scorecard_id VARCHAR,
    created_date TIMESTAMP_NTZ,
    updated_date TIMESTAMP_NTZ,
    listed_at TIMESTAMP_NTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS fact_journey_step (
    campaign_id VARCHAR NOT NULL,
    extraction_date DATE NOT NULL,
    step_id VARCHAR NOT NULL,
    step_name VARCHAR,
    step_sequence NUMBER(38,0) NOT NULL,
    contact_count NUMBER(38,0) NOT NULL,
    conversion_rate FLOAT,
    average_score FLOAT,
    exit_reason VARCHAR,
    scorecard_id VARCHAR,
    extracted_at TIMESTAMP_NTZ NOT NULL,
    load_timestamp TIMESTAMP_NTZ NOT NULL
)
CLUSTER BY (extraction_date, campaign_id);

CREATE TABLE IF NOT EXISTS rejected_journey_step (
    campaign_id VARCHAR NOT NULL,
    extraction_date DATE NOT NULL,
    step_sequence NUMBER(38,0) NOT NULL,
    reason VARCHAR NOT NULL,
    raw_step VARCHAR NOT NULL,
    extracted_at TIMESTAMP_NTZ NOT NULL,
    load_timestamp TIMESTAMP_NTZ NOT NULL
)
CLUSTER BY (extraction_date, campaign_id);

CREATE TABLE IF NOT EXISTS fact_scorecard_performance (
    scorecard_id VARCHAR NOT NULL,
    extraction_date DATE NOT NULL,
    scorecard_name VARCHAR,
    model_version VARCHAR NOT NULL,
    retraining_timestamp TIMESTAMP_NTZ,
    precision FLOAT NOT NULL,
    recall FLOAT NOT NULL,
    f1_score FLOAT NOT NULL,
    auc FLOAT NOT NULL,
    actual_conversion_rate FLOAT NOT NULL,
    predicted_conversion_rate FLOAT NOT NULL,
    pending_backfill BOOLEAN NOT NULL,
    extracted_at TIMESTAMP_NTZ NOT NULL
)
CLUSTER BY (extraction_date);

CREATE TABLE IF NOT EXISTS fact_scorecard_score_distribution (
    scorecard_id VARCHAR NOT NULL,
    extraction_date DATE NOT NULL,
    extracted_at TIMESTAMP_NTZ NOT NULL,
    model_version VARCHAR NOT NULL,
    bucket VARCHAR NOT NULL,
    bucket_lower FLOAT NOT NULL,
    bucket_upper FLOAT NOT NULL,
    contact_count NUMBER(38,0) NOT NULL
)
CLUSTER BY (extraction_date);

CREATE TABLE IF NOT EXISTS fact_predictive_journey (
    load_timestamp TIMESTAMP_NTZ NOT NULL,
    campaign_id VARCHAR NOT NULL,
    scorecard_id VARCHAR,
    extraction_date DATE NOT NULL,
    step_id VARCHAR NOT NULL,
    step_name VARCHAR,
    step_sequence NUMBER(38,0) NOT NULL,
    contact_count NUMBER(38,0) NOT NULL,
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

CREATE TABLE IF NOT EXISTS scorecard_drift (
    scorecard_id VARCHAR NOT NULL,
    extraction_date DATE NOT NULL,
    model_version VARCHAR NOT NULL,
    snapshot_extracted_at TIMESTAMP_NTZ NOT NULL,
    precision FLOAT NOT NULL,
    recall FLOAT NOT NULL,
    predicted_conversion_rate FLOAT NOT NULL,
    actual_conversion_rate FLOAT NOT NULL,
    calibration_gap FLOAT NOT NULL,
    psi FLOAT,
    precision_baseline_median FLOAT,
    recall_baseline_median FLOAT,
    precision_delta FLOAT,
    recall_delta FLOAT,
    baseline_days NUMBER(38,0) NOT NULL,
    load_timestamp TIMESTAMP_NTZ NOT NULL
)
CLUSTER BY (extraction_date);

CREATE TABLE IF NOT EXISTS dim_action_map (
    action_map_id VARCHAR NOT NULL,
    display_name VARCHAR,
    is_active BOOLEAN NOT NULL,
    version NUMBER(38,0),
    media_type VARCHAR,
    action_template_id VARCHAR,
    activation_type VARCHAR,
    activation_delay_seconds NUMBER(38,0),
    weight NUMBER(38,0),
    ignore_frequency_cap BOOLEAN,
    trigger_segment_ids VARCHAR,
    start_date TIMESTAMP_NTZ,
    end_date TIMESTAMP_NTZ,
    created_date TIMESTAMP_NTZ,
    modified_date TIMESTAMP_NTZ,
    listed_at TIMESTAMP_NTZ NOT NULL
);
