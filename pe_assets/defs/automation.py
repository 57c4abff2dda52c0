"""Schedules and sensors: which partitions to (re)materialize, and when."""

import dagster as dg

schedules: list[dg.ScheduleDefinition] = []
sensors: list[dg.SensorDefinition] = []
