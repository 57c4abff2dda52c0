"""Monitoring assets: model drift per scorecard and day."""
