"""Pure pipeline steps: frames and arrays in, frames and arrays out (store.py owns DuckDB)."""
