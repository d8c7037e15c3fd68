# Stages 3-4: keypoints per clip, then joint and limb heatmap volumes.


rule pose:
    input:
        manifest=f"{R}/clips.csv",
    output:
        keypoints=f"{R}/keypoints.h5",
    params:
        skeletons=DATA["skeletons"],
        cfg=config["pose"],
        code=code("pose"),
    log:
        f"{R}/logs/pose.log",
    threads: workflow.cores
    resources:
        mem_mb=2000,
        runtime=120,
    cache: "omit-software"
    conda:
        "../envs/mgpipe.yaml"
    shell:
        "mgpipe pose --manifest {input.manifest} --skeletons {params.skeletons:q} "
        "--out {output.keypoints} --layout {params.cfg[layout]} "
        "--low-score {params.cfg[low_score]} --threads {threads} 2> {log}"


rule heatmaps:
    input:
        keypoints=f"{R}/keypoints.h5",
    output:
        heatmaps=f"{R}/heatmaps.h5",
    params:
        cfg=config["heatmaps"],
        code=code("heatmaps"),
    log:
        f"{R}/logs/heatmaps.log",
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=240,
    cache: "omit-software"
    conda:
        "../envs/mgpipe.yaml"
    shell:
        "mgpipe heatmaps --keypoints {input.keypoints} --out {output.heatmaps} "
        "--size {params.cfg[size]} --sigma {params.cfg[sigma]} --padding {params.cfg[padding]} "
        "--threads {threads} 2> {log}"
