# Stages 1-2: demo data (when configured), clip manifest, frame store.


if DEMO:

    rule demo_data:
        output:
            videos=directory(f"{R}/demo_data/videos"),
            skeletons=directory(f"{R}/demo_data/skeletons"),
            labels=f"{R}/demo_data/labels.csv",
            split=f"{R}/demo_data/split.csv",
        params:
            out=lambda wildcards, output: os.path.dirname(output.labels),
            demo=DS["demo"],
            seed=config["seed"],
            code=code("demo_data"),
        log:
            f"{R}/logs/demo_data.log",
        benchmark:
            f"{R}/benchmarks/demo_data.tsv"
        threads: workflow.cores
        conda:
            "../envs/mgpipe.yaml"
        shell:
            "mgpipe demo-data {params.out} --seed {params.seed} "
            "--subjects {params.demo[num_subjects]} "
            "--segments-per-class {params.demo[segments_per_class]} "
            "--width {params.demo[width]} --height {params.demo[height]} --fps {params.demo[fps]} "
            "2> {log}"


rule clips:
    input:
        labels=DATA["labels"],
        split=DATA["split"],
        videos=DATA["videos"],
        skeletons=DATA["skeletons"],
    output:
        manifest=f"{R}/clips.csv",
        classes=f"{R}/classes.csv",
    params:
        pattern=lambda wildcards: DS["video_pattern"],
        classes=",".join(map(str, DS["classes"] or [])),
        val_fraction=DS["val_fraction"],
        seed=config["seed"],
        on_missing=DS["on_missing"],
        code=code("clips"),
    log:
        f"{R}/logs/clips.log",
    conda:
        "../envs/mgpipe.yaml"
    shell:
        "mgpipe clips --labels {input.labels:q} --split {input.split:q} --videos {input.videos:q} "
        "--skeletons {input.skeletons:q} --video-pattern {params.pattern:q} "
        "--classes={params.classes:q} --val-fraction {params.val_fraction} --seed {params.seed} "
        "--on-missing {params.on_missing} --out {output.manifest} --classes-out {output.classes} "
        "2> {log}"


rule decode:
    input:
        manifest=f"{R}/clips.csv",
    output:
        frames=f"{R}/frames.h5",
    params:
        cfg=config["decode"],
        code=code("decode"),
    log:
        f"{R}/logs/decode.log",
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=240,
    cache: "omit-software"
    conda:
        "../envs/mgpipe.yaml"
    shell:
        "mgpipe decode --manifest {input.manifest} --out {output.frames} "
        "--max-side {params.cfg[max_side]} --quality {params.cfg[jpeg_quality]} "
        "--threads {threads} 2> {log}"
