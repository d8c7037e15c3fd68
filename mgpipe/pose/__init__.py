"""Keypoints to network input: heatmap rendering, and the image pose models' worker
pool (runner) and backends."""
