"""Dashboard views over the facts (funnel drop-off, daily snapshot), on DuckDB and Snowflake."""
