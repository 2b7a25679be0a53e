#!/bin/sh
# Postgres init hook: a second database for MLflow, so its alembic history stays apart from the service's.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE \"$MLFLOW_DB\" OWNER \"$POSTGRES_USER\";"
