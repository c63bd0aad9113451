"""Optional integrations with other Airflow providers (loaded only by them, never at DAG parse)."""
