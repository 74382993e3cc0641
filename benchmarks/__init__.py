"""The studies behind benchmarks/README.md (run as `python -m benchmarks.<study>`)."""
