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
            # Only what the generator reads: no other dataset setting reruns it.
            cfg=mgconfig.canonical({"seed": config["seed"], "dataset": {"demo": DS["demo"]}}),
            code=code("demo_data"),
        log:
            f"{R}/logs/demo_data.log",
        benchmark:
            f"{R}/benchmarks/demo_data.tsv"
        threads: ALL_THREADS
        shell:
            "mgpipe demo-data {params.out:q} --config-json {params.cfg:q} 2> {log:q}"


if SKELETON_SOURCES:

    rule combine_skeletons:
        input:
            [source["path"] for source in SKELETON_SOURCES],
        output:
            pickle=f"{R}/skeletons.pkl",
        params:
            cfg=mgconfig.canonical({"sources": SKELETON_SOURCES, "layout": POSE["layout"]}),
            code=code("skeleton_sources"),
        log:
            f"{R}/logs/combine_skeletons.log",
        shell:
            "mgpipe combine-skeletons --sources-json {params.cfg:q} --out {output.pickle:q} 2> {log:q}"


rule clips:
    input:
        **{k: v for k, v in DATA.items() if v},
    output:
        manifest=f"{R}/clips.csv",
        classes=f"{R}/classes.csv",
    params:
        sources=" ".join(optional_arg(f"--{k}", v) for k, v in DATA.items()),
        # Of the pose settings only the backend and the pickle's layout matter here (which
        # keypoint files to check, how to read a pickle).
        # (a function: the video pattern's {video_id} is not a wildcard)
        cfg=lambda wildcards: mgconfig.canonical(
            {
                "seed": config["seed"],
                "mode": config["mode"],
                "dataset": DS,
                "pose": {"backend": POSE["backend"], "pickle_layout": POSE["pickle_layout"]},
            }
        ),
        code=code("clips"),
    log:
        f"{R}/logs/clips.log",
    shell:
        "mgpipe clips {params.sources} --config-json {params.cfg:q} --out {output.manifest:q} "
        "--classes-out {output.classes:q} 2> {log:q}"


rule decode:
    input:
        manifest=f"{R}/clips.csv",
    output:
        frames=f"{R}/frames.h5",
    params:
        **decode_params(),
    log:
        f"{R}/logs/decode.log",
    threads: ALL_THREADS
    resources:
        mem_mb=DECODE_MEM_MB,
        runtime=DECODE_MINUTES,
    cache: "omit-software"
    shell:
        DECODE_SHELL
