"""The trace pipeline: one MLflow trace per answered question, written off the request thread."""
