# Stages 8-9: multi-view test scores per model, score-level ensemble and report.


rule test:
    input:
        unpack(model_inputs),
        model=f"{R}/models/{{model}}/model.pt",
    output:
        scores=f"{R}/scores/{{model}}.csv",
    params:
        cfg=lambda wildcards: model_config(wildcards.model, "test"),
        code=code("test"),
        frames=frames_arg,
    wildcard_constraints:
        model="|".join(MODELS),
    log:
        f"{R}/logs/test_{{model}}.log",
    benchmark:
        f"{R}/benchmarks/test_{{model}}.tsv"
    threads: config["train"]["threads"]
    resources:
        gpu=gpu_count(),
        mem_mb=8000,
        runtime=240,
    shell:
        "mgpipe test {input.model:q} --config-json {params.cfg:q} --manifest {input.manifest:q} "
        "--classes {input.classes:q} {params.frames} --keypoints {input.keypoints:q} --out {output.scores:q} "
        "--threads {threads} 2> {log:q}"


rule ensemble:
    input:
        scores=expand(f"{R}/scores/{{model}}.csv", model=MODELS),
        classes=f"{R}/classes.csv",
        # for summary.html: every model's training curve (embedded) and the data it counts
        curves=expand(f"{R}/models/{{model}}/curve.png", model=MODELS),
        manifest=f"{R}/clips.csv",
    output:
        metrics=report(f"{R}/ensemble/metrics.json", caption="../report/metrics.rst", category="Results"),
        confusion=report(f"{R}/ensemble/confusion.png", caption="../report/confusion.rst", category="Results"),
        summary=f"{R}/ensemble/summary.md",
        per_class=f"{R}/ensemble/per_class.csv",
        html=report(f"{R}/ensemble/summary.html", caption="../report/summary.rst", category="Results"),
    params:
        cfg=mgconfig.canonical({"ensemble": ENSEMBLE, "fused": config["fused"]}),
        # several arguments: each quoted here, the whole not again
        named=lambda wildcards, input: " ".join(shlex.quote(f"{m}={f}") for m, f in zip(MODELS, input.scores)),
        curves=lambda wildcards, input: " ".join(shlex.quote(f"{m}={f}") for m, f in zip(MODELS, input.curves)),
        # the config the summary names (less the output options, which change no result; a
        # function: the config's own braces are no wildcards)
        run_config=lambda wildcards: mgconfig.canonical(mgconfig.without_output_options(config)),
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
        code=code("ensemble"),
    log:
        f"{R}/logs/ensemble.log",
    shell:
        "mgpipe ensemble --scores {params.named} --classes {input.classes:q} "
        "--curves {params.curves} --manifest {input.manifest:q} --run-config-json {params.run_config:q} "
        "--out-dir {params.out_dir:q} --config-json {params.cfg:q} 2> {log:q}"
