"""relay's benchmark suites: ``python -m benchmarks`` lists them.  See benchmarks/README.md."""
