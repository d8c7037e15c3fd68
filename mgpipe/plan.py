"""Checks the workflow makes when it plans a run, on what only the whole plan knows.

An init file (init.<model>, swin.weights) is an input of its model's training job. If it is an
output of the same run, however it is spelled (an absolute path, a symbolic link, `..`), then
Snakemake removes it before the job that writes it runs (a model initialised from its own
model.pt loses it, with its log and curve, before the job fails), or two models initialised
from each other's outputs retrain each other on every run. So every init path is compared, by
its real path, with every output of every rule of the run: before any job, one line.
"""

from __future__ import annotations

import dataclasses
import os

from mgpipe.io import InputError


def spellings(path: str, results: str) -> list[str]:
    """The ways the workflow's rules may spell the file at `path`: its real path, that path
    relative to the working folder, and under `results` as the config writes it (the rules'
    outputs are `results`/...)."""
    real = os.path.realpath(path)
    out = [real, os.path.relpath(real, os.path.realpath(os.curdir))]
    root = os.path.realpath(results)
    if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
        out.append(os.path.normpath(os.path.join(results, os.path.relpath(real, root))))
    return list(dict.fromkeys(out))


def producer(path: str, results: str, rules):
    """(rule, its wildcards, the output as the rule spells it) of the rule of this run that
    writes `path` (any spelling), or None. rules: Snakemake's rules (is_producer,
    get_wildcards)."""
    for spelled in spellings(path, results):
        for rule in rules:
            if rule.is_producer(spelled):
                return rule, dict(rule.get_wildcards(spelled)), spelled
    return None


def check_inits(inits: dict, results: str, rules, train_rule: str = "train",
                model_file: str = "model.pt") -> dict:
    """{model: its init source} (init_source.InitSource), with a file that is another model's
    trained file of this run spelled as its rule spells it (so the plan sees the dependency).
    InputError naming where the file was named: an init that is an output of this run other
    than another model's trained file (the model's own files, logs, stores, scores), or models
    whose inits form a cycle."""
    resolved, edges = {}, {}
    for model, source in inits.items():
        found = producer(source.file, results, rules)
        if found is None:
            resolved[model] = source
            continue
        rule, wildcards, spelled = found
        if rule.name == train_rule and wildcards.get("model") == model:
            raise InputError(f"{source.named_by}: {source.file} is {spelled}, an output of this run's "
                             f"training of {model} itself (Snakemake would remove it before the job): "
                             "start from a copy outside the results folder")
        if rule.name == train_rule and os.path.basename(spelled) == model_file:
            resolved[model], edges[model] = dataclasses.replace(source, file=spelled), wildcards["model"]
            continue
        raise InputError(f"{source.named_by}: {source.file} is {spelled}, an output of this run's rule "
                         f"{rule.name} (rewritten or removed when that rule runs): an init file is a "
                         "trained model's model.pt or a file outside the results folder")
    for start in edges:   # each model has at most one init: follow the chain
        chain, model = [start], edges[start]
        while model in edges and model not in chain:
            chain.append(model)
            model = edges[model]
        if model == start:
            # (the plan's sources are the config's: "config keys init.joint and init.limb")
            names = " and ".join(inits[m].named_by.removeprefix("config key ") for m in chain)
            raise InputError(f"config keys {names}: the models start from each other's trained weights "
                             f"({' -> '.join(chain + [start])}), a cycle: each would retrain the other on "
                             "every run; start one of them from a file outside the results folder")
    return resolved
