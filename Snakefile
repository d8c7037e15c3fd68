# mgpipe: raw videos of people -> micro-gesture classifier (see README.md).
# Thin on purpose: every rule calls the `mgpipe` command; the logic lives in the mgpipe package.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


rule all:
    input:
        FINAL_OUTPUTS,
    default_target: True


include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


# (every rule is defined now: init files are checked against all of their outputs)
check_init_outputs()
fit_rules_to_cluster()
