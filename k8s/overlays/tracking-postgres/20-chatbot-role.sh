# Runs once, after 10-chatbot-feedback.sql, when the data directory is first initialised (sourced by the
# image's entrypoint). The chatbot's own role: it owns database chatbot_feedback (its migrations create the
# tables) and nothing else; no superuser, no CREATEDB/CREATEROLE, no access to the mlflow database (the
# POSTGRES_USER superuser stays the tracking server's). Existing clusters: run the same statements by hand.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname mlflow \
     -v role="$CHATBOT_DB_USER" -v password="$CHATBOT_DB_PASSWORD" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE chatbot_feedback FROM PUBLIC;
ALTER DATABASE chatbot_feedback OWNER TO :"role";
\connect chatbot_feedback
ALTER SCHEMA public OWNER TO :"role";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL
