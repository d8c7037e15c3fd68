# Sharded data stages (data.shards > 1): decode and pose run as one job per shard, each over a
# slice of whole videos (mgpipe/stages/shards.py), and two gather rules build frames.h5 and
# keypoints.h5 from the shard stores, each clip copied as stored. The later stages read the
# gathered stores as they read an unsharded run's. With data.shards 1 none of these rules exist
# and the DAG is the plain one (decode and pose in data.smk and features.smk).

# (SHARDS, shard_runtime and shard_slice are in common.smk, and so are the command, settings and
# resources the shard jobs share with the decode and pose rules: DECODE_*, POSE_*)

if SHARDS > 1:

    # The gather rules write the files the plain decode and pose rules would write.
    ruleorder: gather_frames > decode
    ruleorder: gather_keypoints > pose

    wildcard_constraints:
        shard=r"\d+",

    # A checkpoint: Snakemake looks at the slices again once it has run. A slice whose rows did
    # not change keeps its file and modification time, so only the shards whose slice changed
    # rerun. update(): the folder is not removed before the job (the command itself removes the
    # slices of shards that no longer exist); Snakemake's timestamp in it dates the folder.
    checkpoint shard_clips:
        input:
            manifest=f"{R}/clips.csv",
        output:
            slices=update(directory(SHARD_SLICES)),
        params:
            shards=SHARDS,
            code=code("shards"),
        log:
            f"{R}/logs/shard_clips.log",
        shell:
            "mgpipe shard --manifest {input.manifest:q} --shards {params.shards} "
            "--out-dir {output.slices:q} 2> {log:q}"

    # (named one by one, not unpacked from a function: while the checkpoint has not run, an
    # unpacked function's names would be lost and the planned command could not be shown)
    POSE_SHARD_SOURCES = {"frames": f"{R}/shards/frames/{{shard}}.h5"} if IMAGE_POSE else {}
    if DATA["skeletons"]:
        POSE_SHARD_SOURCES["skeletons"] = DATA["skeletons"]

    rule decode_shard:
        input:
            manifest=shard_slice,
            # the dependency on the slicing checkpoint (see shard_slice in common.smk)
            slices=ancient(SHARD_SLICES),
        output:
            frames=f"{R}/shards/frames/{{shard}}.h5",
        params:
            **decode_params(),
        log:
            f"{R}/logs/decode/{{shard}}.log",
        threads: ALL_THREADS
        resources:
            mem_mb=DECODE_MEM_MB,
            runtime=shard_runtime(DECODE_MINUTES),
        shell:
            DECODE_SHELL

    rule pose_shard:
        input:
            **POSE_SHARD_SOURCES,
            manifest=shard_slice,
            # the dependency on the slicing checkpoint (see shard_slice in common.smk)
            slices=ancient(SHARD_SLICES),
        output:
            keypoints=f"{R}/shards/keypoints/{{shard}}.h5",
        params:
            **pose_params(),
        log:
            f"{R}/logs/pose/{{shard}}.log",
        threads: ALL_THREADS
        resources:
            mem_mb=POSE_MEM_MB,
            runtime=shard_runtime(POSE_MINUTES),
        shell:
            POSE_SHELL

    rule gather_frames:
        input:
            stores=expand(f"{R}/shards/frames/{{shard}}.h5", shard=range(SHARDS)),
            # (see shard_slice in common.smk: whenever the slicing reruns, the gathered store
            # and so everything that reads it waits for the shards it replans)
            slices=SHARD_SLICES,
        output:
            frames=f"{R}/frames.h5",
        params:
            code=code("shards"),
        log:
            f"{R}/logs/gather_frames.log",
        resources:
            mem_mb=2000,
            runtime=60,
        shell:
            "mgpipe gather frames {input.stores:q} --out {output.frames:q} 2> {log:q}"

    rule gather_keypoints:
        input:
            stores=expand(f"{R}/shards/keypoints/{{shard}}.h5", shard=range(SHARDS)),
            # (see shard_slice in common.smk: whenever the slicing reruns, the gathered store
            # and so everything that reads it waits for the shards it replans)
            slices=SHARD_SLICES,
        output:
            keypoints=f"{R}/keypoints.h5",
        params:
            code=code("shards"),
        log:
            f"{R}/logs/gather_keypoints.log",
        resources:
            mem_mb=2000,
            runtime=30,
        shell:
            "mgpipe gather keypoints {input.stores:q} --out {output.keypoints:q} 2> {log:q}"
