"""ZeRO stages 1-3: sharded optimizer states, gradients and (stage 3) parameters. The files, in
the order a training step's data flows through them:

    build.py               engine's module + config -> sharded groups, optimizer, reducer, coordinator
    init_context.py        zero.Init / GatheredParameters: stage-3 params partitioned as modules are built
    partition_parameters.py  DeepSpeed's namespace of that name; tensor constructors inside zero.Init
    transformers_init.py   Transformers' models built inside zero.Init get their plain initial weights
    leaf_modules.py        set_z3_leaf_modules: modules that gather all their descendants' params at once
    partitioned_params.py  a stage-3 param's shard (ds_tensor), gathers and releases
    param_fetch.py         forward / backward hooks that gather params just in time and prefetch
    hpz.py                 ZeRO++ hpZ: secondary param slices so later gathers stay in a group
    groups.py              a param group's flat shard, fp32 master and summed gradients
    grad_reduce.py         gradients summed into their owner's shard, bucket by bucket (qgZ too)
    optimizer.py           the wrapped optimizer's step on the shards, then the updated params published
    nvme_swapper.py        ZeRO-Infinity: masters and optimizer states swapped to NVMe per sub-group
    param_swapper.py       ZeRO-Infinity: stage-3 param shards swapped to NVMe
    checkpointing.py       DeepSpeed's checkpoint files, and resuming on another number of ranks
"""
