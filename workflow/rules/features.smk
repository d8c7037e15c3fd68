# Stages 3-4: keypoints per clip, then joint and limb heatmap volumes.


rule pose:
    input:
        unpack(pose_inputs),
    output:
        keypoints=f"{R}/keypoints.h5",
    params:
        **pose_params(),
    log:
        f"{R}/logs/pose.log",
    threads: ALL_THREADS
    resources:
        mem_mb=POSE_MEM_MB,
        runtime=POSE_MINUTES,
    cache: "omit-software"
    shell:
        POSE_SHELL


rule heatmaps:
    input:
        keypoints=f"{R}/keypoints.h5",
    output:
        heatmaps=f"{R}/heatmaps.h5",
    params:
        cfg=stage_config("heatmaps"),
        code=code("heatmaps"),
    log:
        f"{R}/logs/heatmaps.log",
    threads: ALL_THREADS
    resources:
        mem_mb=4000,
        runtime=240,
    cache: "omit-software"
    shell:
        "mgpipe heatmaps --keypoints {input.keypoints:q} --config-json {params.cfg:q} "
        "--out {output.heatmaps:q} --threads {threads} 2> {log:q}"


# Not part of `all`: `snakemake results/<name>/keypoints.pkl` exports the keypoints for pyskl /
# MMAction2 (PoseC3D and friends) users.
rule export_pickle:
    input:
        keypoints=f"{R}/keypoints.h5",
        manifest=f"{R}/clips.csv",
    output:
        pickle=f"{R}/keypoints.pkl",
    log:
        f"{R}/logs/export_pickle.log",
    shell:
        "mgpipe export-pickle --keypoints {input.keypoints:q} --manifest {input.manifest:q} "
        "--out {output.pickle:q} 2> {log:q}"
