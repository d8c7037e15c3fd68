"""Commands beside the pipeline: demo data, the benchmark, the multi-node launcher,
photo videos with known motion."""
