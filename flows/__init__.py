"""Prefect flows and the `tribes` command: thin wiring of pipeline steps to storage."""
