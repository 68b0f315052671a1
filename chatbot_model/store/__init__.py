"""Persistence: the feedback and conversation stores on one SQL database, and its Alembic migrations."""
