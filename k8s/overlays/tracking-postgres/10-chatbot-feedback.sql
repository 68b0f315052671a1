-- Runs once, when the PostgreSQL data directory is first initialised (POSTGRES_DB=mlflow is created by the image).
CREATE DATABASE chatbot_feedback;
