"""Commands beside the pipeline: demo data, the benchmark, the multi-node launcher,
photo videos with known motion; and a dry-run plan read back (dry_run: the tests' and the
scale benchmark's)."""
