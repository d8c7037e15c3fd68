# SLURM: no job that cannot start. A job asking for more CPUs or memory than any node of its
# partition has pends forever (reason PartitionConfig) while Snakemake waits without a word. Here,
# before anything is submitted, each rule's threads are fitted to the largest node of its
# partition (sinfo), and a rule whose memory no node has stops the run with one line.
# (Included last: every rule, with the profile's set-threads and set-resources, exists by now.)


def _plain(rule, value):
    """A rule's resource as a plain value, None where it depends on the job (its input, wildcards).
    Profile values are expressions Snakemake evaluates per job: evaluated here without a job."""
    value = getattr(value, "value", value)
    if callable(value):
        import inspect

        known = dict(wildcards={}, input=[], attempt=1, threads=1, rulename=rule.name, async_run=None)
        try:
            value = value(**{k: known[k] for k in inspect.signature(value).parameters})
        except Exception:
            return None
    return value


if SLURM_NODES:
    for _rule in workflow.rules:
        _partition = _plain(_rule, _rule.resources.get("slurm_partition")) or ""
        if _partition not in SLURM_NODES:
            continue  # a partition sinfo does not list: sbatch names it
        _cpus, _mem = SLURM_NODES[_partition]
        _threads = getattr(_rule.resources.get("_cores"), "value", _rule.resources.get("_cores"))
        if isinstance(_threads, int) and _threads > _cpus:
            _rule.resources["_cores"] = _cpus
        _mem_mb = _plain(_rule, _rule.resources.get("mem_mb"))
        if isinstance(_mem_mb, int) and _mem > 0 and _mem_mb > _mem:
            sys.exit(f"mgpipe: rule {_rule.name} asks for mem_mb={_mem_mb}, but the largest node of "
                     f"partition {_partition or '(default)'} has {_mem} MB (sinfo): lower it in the "
                     "profile's set-resources")
