"""Training across the nodes of a SLURM allocation: one torchrun agent per node under srun.

    python -m mgpipe.tools.multinode --nodes N --nproc-per-node G -m mgpipe train ...

runs, inside the job's allocation,

    srun --nodes N --ntasks N --ntasks-per-node 1 torchrun --nnodes N --nproc_per_node G
         --rdzv_backend c10d --rdzv_endpoint <first node>:<port> --rdzv_id <job id> -m mgpipe train ...

The agents meet at the c10d rendezvous on the allocation's first node (the port derives from the
job id, so two jobs sharing a node do not collide; MGPIPE_RDZV_PORT overrides it; an id or a
port that is not one is a one-line error) and start
N x G processes that train as one data-parallel job (mgpipe/stages/train.py).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys


def torchrun_args(nodes: int, nproc_per_node: int, endpoint: str, run_id: str) -> list[str]:
    """The torchrun agent's command line up to the module to run (c10d rendezvous)."""
    return ["torchrun", "--nnodes", str(nodes), "--nproc_per_node", str(nproc_per_node),
            "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", run_id]


class LaunchError(ValueError):
    """A setting of the environment the launcher cannot use: one line, exit 2."""


_JOB_ID = re.compile(r"[0-9]+")
_ARRAY_JOB_ID = re.compile(r"([0-9]+)_([0-9]+)")   # "<array job>_<task>", as squeue shows them


def job_key(job_id: str) -> int:
    """A number that tells this job from others sharing its node: the job id, or for an array
    task written "<job>_<task>" both parts (Python's int() would read "123_4" as 1234, the id of
    another job). Only ASCII digits: int() also takes spaces, signs and other scripts' digits."""
    if _JOB_ID.fullmatch(job_id):
        return int(job_id)
    array = _ARRAY_JOB_ID.fullmatch(job_id)
    if array:
        return int(array.group(1)) * 100_003 + int(array.group(2))
    raise LaunchError(f"SLURM_JOB_ID {job_id[:40]!r} is not a SLURM job id (digits, or <job>_<task> "
                      "for an array task)")


def rendezvous_port(job_id: str) -> int:
    """The c10d rendezvous port: MGPIPE_RDZV_PORT (1024..65535), else one derived from the job."""
    port = os.environ.get("MGPIPE_RDZV_PORT")
    if port:
        if not _JOB_ID.fullmatch(port) or not 1024 <= int(port) <= 65535:
            raise LaunchError(f"MGPIPE_RDZV_PORT {port[:40]!r} is not a port number (1024 to 65535)")
        return int(port)
    return 20000 + job_key(job_id) % 20000


def first_node(nodelist: str) -> str:
    """The first host of a SLURM node list ("gpu[01-04]" -> "gpu01")."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgpipe.tools.multinode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--nproc-per-node", type=int, default=1)
    parser.add_argument("-m", dest="module", required=True, help="module to run, then its arguments")
    args, rest = parser.parse_known_args(argv)
    job_id, nodelist = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_JOB_NODELIST")
    if not job_id or not nodelist:
        print("mgpipe: train.nodes > 1 runs inside a SLURM job (no SLURM_JOB_ID here); "
              "use --profile profiles/slurm, or train.nodes: 1", file=sys.stderr)
        return 2
    try:
        port = rendezvous_port(job_id)
    except LaunchError as e:
        print(f"mgpipe: {e}", file=sys.stderr)
        return 2
    endpoint = f"{first_node(nodelist)}:{port}"
    command = ["srun", "--nodes", str(args.nodes), "--ntasks", str(args.nodes), "--ntasks-per-node", "1",
               "--kill-on-bad-exit=1",
               *torchrun_args(args.nodes, args.nproc_per_node, endpoint, f"mgpipe-{job_id}"),
               "-m", args.module, *rest]
    print("mgpipe: " + " ".join(command), file=sys.stderr, flush=True)
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
