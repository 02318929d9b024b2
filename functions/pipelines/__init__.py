"""Pipelines: create, list, read and delete pipelines; ratings; the stage types the deployment supports."""
