"""Snakemake's dry-run plan (`snakemake -n`) read back: the one parser of its job-stats table,
shared by the workflow tests and benchmarks/bench_scale.py."""

from __future__ import annotations


def jobs_per_rule(stdout: str) -> dict[str, int]:
    """{rule: planned jobs} from the job-stats table of a dry run's output (the table headed
    `job  count`, ended by its `total` row); {} when nothing is planned (no table)."""
    out, table = {}, False
    for line in stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            table = True
            continue
        if table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if len(parts) == 2 and parts[1].isdigit():
                out[parts[0]] = int(parts[1])
    return out
