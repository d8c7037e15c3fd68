# Stages 5-7: training (every model of the registry, one rule), and the merge that gives a fused
# network its pretrained weights.
# Resumable training state lives in {results}/state/<model>, outside the declared outputs, so a
# killed job resumes from its last epoch when rerun; a finished training removes it unless
# train.keep_state. The output options (train.tensorboard, train.keep_state) are not in the params
# (changing one reruns nothing) and reach the command as --set.


rule train:
    input:
        unpack(train_inputs),
    output:
        model=f"{R}/models/{{model}}/model.pt",
        log=report(f"{R}/models/{{model}}/log.csv", caption="../report/training.rst", category="Training"),
        curve=report(f"{R}/models/{{model}}/curve.png", caption="../report/training.rst", category="Training"),
    params:
        cfg=lambda wildcards: model_config(wildcards.model),
        code=code("train"),
        launcher=LAUNCHER,
        frames=frames_arg,
        init=init_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        state=lambda wildcards: f"{R}/state/{wildcards.model}",
    wildcard_constraints:
        model="|".join(MODELS),
    log:
        f"{R}/logs/train_{{model}}.log",
    benchmark:
        f"{R}/benchmarks/train_{{model}}.tsv"
    threads: config["train"]["threads"]
    resources:
        **train_resources(),
        mem_mb=16000,
        runtime=1440,
    # (the output options train.tensorboard and train.keep_state come from the config in the
    # command, not through params: params are a rerun trigger, and switching them retrains nothing)
    shell:
        "{params.launcher} mgpipe train {wildcards.model:q} --config-json {params.cfg:q} "
        "--manifest {input.manifest:q} --classes {input.classes:q} {params.frames} "
        "--keypoints {input.keypoints:q} {params.init} --out-dir {params.out_dir:q} "
        "--state-dir {params.state:q} --threads {threads} "
        "--set train.tensorboard={config[train][tensorboard]} --set train.keep_state={config[train][keep_state]} "
        "2> {log:q}"


# Self-supervised pretraining of a pose model's pathway (pretrain.models): its weights are where
# that model's training starts (the train rule's init input).
rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        weights=f"{R}/pretrained/{{model}}/weights.pth",
        log=report(f"{R}/pretrained/{{model}}/log.csv", caption="../report/pretraining.rst", category="Training"),
        curve=report(f"{R}/pretrained/{{model}}/curve.png", caption="../report/pretraining.rst", category="Training"),
    params:
        cfg=lambda wildcards: model_config(wildcards.model, "pretrain"),
        code=code("pretrain"),
        init=pretrain_init_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.weights),
        state=lambda wildcards: f"{R}/state/pretrain_{wildcards.model}",
    wildcard_constraints:
        model="|".join(PRETRAIN) or "(?!)",
    log:
        f"{R}/logs/pretrain_{{model}}.log",
    benchmark:
        f"{R}/benchmarks/pretrain_{{model}}.tsv"
    threads: config["train"]["threads"]
    # one process (no data parallelism here): one GPU where the training would take them
    resources:
        gpu=min(1, gpu_count()),
        mem_mb=16000,
        runtime=1440,
    shell:
        "mgpipe pretrain {wildcards.model:q} --config-json {params.cfg:q} --manifest {input.manifest:q} "
        "--keypoints {input.keypoints:q} {params.init} --out-dir {params.out_dir:q} --state-dir {params.state:q} "
        "--threads {threads} --set train.keep_state={config[train][keep_state]} 2> {log:q}"


rule merge:
    input:
        rgb=f"{R}/models/rgb/model.pt",
        pose=f"{R}/models/joint/model.pt",
    output:
        merged=f"{R}/merged/{{model}}.pt",
    params:
        cfg=stage_config("seed", "rgb", "pose_model", "fused"),
        code=code("merge"),
    wildcard_constraints:
        model="|".join(MERGED) or "(?!)",
    log:
        f"{R}/logs/merge_{{model}}.log",
    shell:
        "mgpipe merge --rgb {input.rgb:q} --pose {input.pose:q} --model {wildcards.model:q} "
        "--out {output.merged:q} --config-json {params.cfg:q} 2> {log:q}"
