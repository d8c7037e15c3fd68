# Stages 5-7: single-modality pretraining, the merge, fused training.
# Resumable training state lives in {results}/state/<model>, outside the declared outputs, so a
# killed job resumes from its last epoch when rerun.

rule pretrain_rgb:
    input:
        **train_data("rgb"),
    output:
        **train_outputs("rgb"),
    params:
        model="rgb",
        cfg=model_config("rgb"),
        code=code("train"),
        launcher=LAUNCHER,
        frames=frames_arg,
        init="",
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        state=f"{R}/state/rgb",
    log:
        f"{R}/logs/train_rgb.log",
    benchmark:
        f"{R}/benchmarks/train_rgb.tsv"
    threads: config["train"]["threads"]
    resources:
        gpu=gpu_count(),
        mem_mb=16000,
        runtime=1440,
    conda:
        "../envs/mgpipe.yaml"
    shell:
        "{params.launcher} mgpipe train {params.model} --config-json {params.cfg:q} --manifest {input.manifest} "
        "--classes {input.classes} {params.frames} --keypoints {input.keypoints} "
        "{params.init} --out-dir {params.out_dir} --state-dir {params.state} "
        "--threads {threads} 2> {log}"


use rule pretrain_rgb as pretrain_pose with:
    input:
        **train_data("joint"),
    output:
        **train_outputs("joint"),
    params:
        model="joint",
        cfg=model_config("joint"),
        code=code("train"),
        launcher=LAUNCHER,
        frames=frames_arg,
        init="",
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        state=f"{R}/state/joint",
    log:
        f"{R}/logs/train_joint.log",
    benchmark:
        f"{R}/benchmarks/train_joint.tsv"


use rule pretrain_rgb as pretrain_limb with:
    input:
        **train_data("limb"),
    output:
        **train_outputs("limb"),
    params:
        model="limb",
        cfg=model_config("limb"),
        code=code("train"),
        launcher=LAUNCHER,
        frames=frames_arg,
        init="",
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        state=f"{R}/state/limb",
    log:
        f"{R}/logs/train_limb.log",
    benchmark:
        f"{R}/benchmarks/train_limb.tsv"


rule merge:
    input:
        rgb=f"{R}/models/rgb/model.pt",
        pose=f"{R}/models/joint/model.pt",
    output:
        merged=f"{R}/merged/fused_{{variant}}.pt",
    params:
        cfg=stage_config("seed", "rgb", "pose_model", "fused"),
        code=code("merge"),
    wildcard_constraints:
        variant="|".join(VARIANTS),
    log:
        f"{R}/logs/merge_{{variant}}.log",
    conda:
        "../envs/mgpipe.yaml"
    shell:
        "mgpipe merge --rgb {input.rgb} --pose {input.pose} --variant {wildcards.variant} "
        "--out {output.merged} --config-json {params.cfg:q} 2> {log}"


use rule pretrain_rgb as train_fused with:
    input:
        **train_data("fused"),
        merged=f"{R}/merged/fused_{{variant}}.pt",
    output:
        **train_outputs("fused_{variant}"),
    params:
        model="fused_{variant}",
        cfg=model_config("fused"),
        code=code("train"),
        launcher=LAUNCHER,
        frames=frames_arg,
        init=lambda wildcards, input: f"--init {input.merged}",
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        state=f"{R}/state/fused_{{variant}}",
    wildcard_constraints:
        variant="|".join(VARIANTS),
    log:
        f"{R}/logs/train_fused_{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/train_fused_{{variant}}.tsv"
