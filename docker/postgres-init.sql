-- One server, separate databases: data tables, Dagster instance storage, MLflow backend.
CREATE DATABASE movies;
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
CREATE DATABASE feast;
CREATE DATABASE airflow;
