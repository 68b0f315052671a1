"""Alembic environment: runs on the connection `chatbot_model.store.migrations` hands over (online mode only)."""

from alembic import context

from chatbot_model.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the feedback migrations through chatbot_model.store.migrations (or `llmops-chatbot db "
                       "upgrade`): they need a live connection, offline SQL scripts are not supported")
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
