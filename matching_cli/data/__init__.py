"""Getting the raw files, validating them and preparing them: parquet -> arrays."""
