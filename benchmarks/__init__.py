"""Op-level and model-level speed benchmarks for acmtool (run as `python -m benchmarks.NAME`)."""
