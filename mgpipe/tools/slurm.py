"""What the workflow asks SLURM, so that no job is submitted that cannot start, and no job that
cannot start is waited for without a word.

At plan time (workflow/rules/common.smk: fit_rules_to_cluster) every rule is held against the
largest node of its partition, as `sinfo` lists them: threads are fitted to its CPUs, and memory,
GPUs or a time limit it does not have, or a partition sinfo does not list, stop the run with one
line naming the rule. While the run lasts (the Snakefile's onstart), `PendingWatch` asks `squeue`
about this workflow's pending jobs and reports, once each, a job that waits for something that does
not come by itself (a hold, a partition that is down, a per-job limit of its QOS: SLURM's pending
reason), where the executor would wait for it forever.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Partition:
    """The largest node of a partition: CPUs, memory (MB, 0: unknown), GPUs (its `gpu` generic
    resources), and the partition's time limit in minutes (None: none)."""

    cpus: int
    mem_mb: int
    gpus: int
    max_minutes: int | None


def _sinfo(*args: str) -> str | None:
    try:
        return subprocess.run(["sinfo", "-h", *args], capture_output=True, text=True, timeout=60,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def gres_gpu_count(sinfo_gres: str) -> int:
    """The largest GPU count in sinfo's %G column ("gpu:a100:4(S:0-1),gpu:2", "(null)", ...)."""
    counts = [int(n) for n in re.findall(r"\bgpu(?::[^:,()\s]+)?:(\d+)", sinfo_gres)]
    return max(counts, default=0)


def cluster_gpu_count() -> int:
    """The most GPUs one node of the cluster offers, 0 on a cluster without GPUs or where sinfo
    cannot be asked. Asked by the workflow so that train.device auto asks for GPUs only where
    the cluster has them (the Snakemake inside each job asks the same)."""
    return gres_gpu_count(_sinfo("-o", "%G") or "")


def time_limit_minutes(text: str) -> int | None:
    """sinfo's %l ("infinite", "30:00", "2-00:00:00", "1:00:00", "UNLIMITED") in minutes (None:
    no limit or unreadable)."""
    text = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if not m:
        return int(text) if text.isdigit() else None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    if m.group(2) is None and m.group(1) is not None:   # "D-HH:MM" has no seconds
        days, hours, minutes, seconds = days, minutes, seconds, 0
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


SINFO_NODES = "%P|%c|%m|%G|%l"


def parse_sinfo_nodes(text: str) -> dict[str, Partition]:
    """`sinfo -N -o '%P|%c|%m|%G|%l'` lines ("gpu*|64|512000|gpu:a100:4|2-00:00:00") ->
    {partition: its largest node}. The default partition (sinfo's *) is also listed under ""."""
    out: dict[str, Partition] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 5 or not parts[1].isdigit():
            continue
        mem = int(parts[2].rstrip("+")) if parts[2].rstrip("+").isdigit() else 0
        node = Partition(int(parts[1]), mem, gres_gpu_count(parts[3]), time_limit_minutes(parts[4]))
        for name in [parts[0].rstrip("*")] + ([""] if parts[0].endswith("*") else []):
            old = out.get(name)
            out[name] = node if old is None else Partition(
                max(old.cpus, node.cpus), max(old.mem_mb, node.mem_mb), max(old.gpus, node.gpus),
                old.max_minutes)
    return out


def read_partitions() -> dict[str, Partition]:
    """{partition: its largest node} from sinfo; {} where sinfo cannot be asked."""
    return parse_sinfo_nodes(_sinfo("-N", "-o", SINFO_NODES) or "")


def fit_problem(rule: str, partition: str, node: Partition, *, mem_mb=None, gpus=None, runtime=None) -> str | None:
    """Why a job of `rule` can never start on `partition` (one line), or None. Threads are not
    here: they are fitted (lowered to the node's CPUs), not refused."""
    where = f"the largest node of partition {partition or '(default)'}"
    if isinstance(mem_mb, int) and node.mem_mb > 0 and mem_mb > node.mem_mb:
        return (f"the {rule} rule asks for mem_mb={mem_mb}, but {where} has {node.mem_mb} MB (sinfo); "
                "lower it in the profile's set-resources")
    if isinstance(gpus, int) and gpus > node.gpus:
        return (f"the {rule} rule asks for {gpus} GPU(s) per node, but {where} has {node.gpus} (sinfo); "
                "set train.gpus (train.device cpu: none), or the rule's slurm_partition to one with GPUs")
    if isinstance(runtime, int) and node.max_minutes is not None and runtime > node.max_minutes:
        return (f"the {rule} rule asks for runtime={runtime} minutes, but partition {partition or '(default)'} "
                f"allows {node.max_minutes} (sinfo); lower it in the profile's set-resources")
    return None


def unknown_partition(rule: str, partition: str, known) -> str:
    names = ", ".join(sorted(n for n in known if n)) or "none"
    if not partition:
        return (f"the {rule} rule names no slurm_partition and the cluster has no default partition "
                f"(partitions: {names}); set slurm_partition in the profile")
    return (f"the {rule} rule asks for partition {partition}, which sinfo does not list (partitions: "
            f"{names}); set slurm_partition in the profile")


# ---- pending jobs ------------------------------------------------------------------------------
# SLURM's pending reasons (squeue %r) for a job that waits for something that does not come by
# itself. Waiting for resources, priority, a dependency or a start time is not among them.
NEVER_STARTS = {
    "PartitionConfig": "it asks for more than any node of its partition has",
    "PartitionNodeLimit": "it asks for more nodes than its partition allows",
    "PartitionTimeLimit": "its time limit is above its partition's",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved",
    "NodeDown": "a node it needs is down",
    "BadConstraints": "no node has the features it asks for",
    "InvalidAccount": "its account is not valid",
    "InvalidQOS": "its QOS is not valid",
    "JobHeldUser": "it is held (scontrol release {job}, or scancel {job})",
    "JobHeldAdmin": "an administrator holds it",
    "DependencyNeverSatisfied": "it depends on a job that failed",
}
_PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)Max\w*PerJob\w*$")


def never_starts(reason: str) -> str | None:
    """What keeps a pending job from ever starting, from its pending reason; None: it waits for
    something that comes (resources, priority, its dependencies, its begin time)."""
    key = reason.split(",")[0].strip()
    if key in NEVER_STARTS:
        return NEVER_STARTS[key]
    if _PER_JOB_LIMIT.match(key):
        return "it asks for more than a per-job limit of its QOS or association allows"
    return None


def parse_squeue(text: str) -> list[dict]:
    """`squeue -h -t PD -o '%i|%k|%r|%Z'` lines -> [{job, comment, reason, workdir}]."""
    rows = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            rows.append(dict(zip(("job", "comment", "reason", "workdir"), (p.strip() for p in parts))))
    return rows


def rule_of(comment: str) -> str:
    """The rule (and wildcards) in the SLURM executor's job comment rule_<rule>[_wildcards_<values>]."""
    m = re.fullmatch(r"rule_(.+?)(?:_wildcards_(.+))?", comment)
    if not m:
        return comment
    return m.group(1) + (f" ({m.group(2)})" if m.group(2) else "")


WATCH_SECONDS = float(os.environ.get("MGPIPE_SLURM_WATCH_SECONDS", 60))


class PendingWatch(threading.Thread):
    """Reports, once per job and reason, a pending job of this workflow (SLURM executor jobs, whose
    comment names the rule, submitted from `workdir`) that cannot start. A daemon: it ends with the
    Snakemake that started it."""

    def __init__(self, warn, workdir: str, every: float = WATCH_SECONDS):
        super().__init__(name="mgpipe-slurm-pending", daemon=True)
        self.warn, self.workdir, self.every = warn, os.path.realpath(workdir), every
        self.reported: set = set()

    def check(self, squeue_text: str) -> list[str]:
        lines = []
        for row in parse_squeue(squeue_text):
            if not row["comment"].startswith("rule_") or os.path.realpath(row["workdir"]) != self.workdir:
                continue
            why = never_starts(row["reason"])
            if why is None or (row["job"], row["reason"]) in self.reported:
                continue
            self.reported.add((row["job"], row["reason"]))
            lines.append(f"mgpipe: SLURM job {row['job']} (rule {rule_of(row['comment'])}) cannot start: "
                         f"{row['reason']}: {why.format(job=row['job'])}")
        return lines

    def run(self) -> None:
        while True:
            try:
                out = subprocess.run(["squeue", "--me", "-h", "-t", "PD", "-o", "%i|%k|%r|%Z"],
                                     capture_output=True, text=True, timeout=60).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            for line in self.check(out):
                self.warn(line)
            time.sleep(self.every)
