"""The studies behind the README's result tables (run as `python -m benchmarks.<study>`)."""
