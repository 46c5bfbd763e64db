"""The DeepSpeed config: loading, batch-size inference, defaults, and errors that name the key."""

import json
import warnings

import pytest
import torch

from deepspeed_ext.runtime.config import ConfigError, DeepSpeedConfig, load_config, resolve_batch_sizes


@pytest.mark.parametrize("given, world, expected", [
    ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 4}, 2, (32, 4, 4)),
    ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4}, 2, (32, 4, 4)),
    ({"train_batch_size": 32, "gradient_accumulation_steps": 2}, 2, (32, 8, 2)),
    ({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 3}, 2, (24, 4, 3)),
    ({"train_batch_size": 32}, 4, (32, 8, 1)),
    ({"train_micro_batch_size_per_gpu": 5}, 3, (15, 5, 1)),
    ({"train_batch_size": 128, "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}, 2,
     (128, 64, 1)),
])
def test_batch_sizes_are_inferred(given, world, expected):
    config = DeepSpeedConfig(given, world_size=world)
    assert (config.train_batch_size, config.train_micro_batch_size_per_gpu,
            config.gradient_accumulation_steps) == expected


@pytest.mark.parametrize("given, message", [
    ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 3},
     r"train_batch_size \(32\) must equal .* \(4\) x gradient_accumulation_steps \(3\) x world size \(2\)"),
    ({"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4}, "do not fit together"),
    ({"train_batch_size": 1}, "do not fit together"),
    ({}, "either train_batch_size or train_micro_batch_size_per_gpu"),
    ({"train_batch_size": 0}, "train_batch_size must be at least 1"),
])
def test_inconsistent_batch_sizes_are_refused(given, message):
    with pytest.raises(ConfigError, match=message):
        DeepSpeedConfig(given, world_size=2)


def test_resolve_batch_sizes_directly():
    assert resolve_batch_sizes(None, 2, 4, 2) == (16, 2, 4)


def test_defaults_are_deepspeeds():
    config = DeepSpeedConfig({"train_batch_size": 8})
    assert config.fp16.enabled is False and config.fp16.initial_scale_power == 16
    assert config.fp16.loss_scale_window == 1000 and config.fp16.hysteresis == 2 and config.fp16.min_loss_scale == 1
    assert config.bf16.enabled is False and config.gradient_clipping == 0.0 and config.steps_per_print == 10
    zero = config.zero_optimization
    assert zero.stage == 0 and zero.reduce_bucket_size == 500_000_000 and zero.overlap_comm is False
    assert zero.offload_optimizer.device == "none" and zero.offload_param.buffer_count == 5
    assert config.tensorboard.job_name == "DeepSpeedJobName" and config.optimizer.type is None


def test_steps_per_print_may_be_infinite():
    """Accelerate writes steps_per_print as inf for "never print"."""
    assert DeepSpeedConfig({"train_batch_size": 8, "steps_per_print": float("inf")}).steps_per_print == float("inf")
    assert DeepSpeedConfig('{"train_batch_size": 8, "steps_per_print": Infinity}').steps_per_print == float("inf")


def test_sections_accept_deepspeed_spellings():
    config = DeepSpeedConfig({
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95]}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 100}},
        "bfloat16": {"enabled": True},
        "zero_optimization": {"stage": 3, "reduce_bucket_size": 5e8, "stage3_gather_fp16_weights_on_model_save": True,
                              "offload_param": {"device": "cpu", "pin_memory": True}},
        "aio": {"thread_count": 2},
        "gradient_clipping": "auto",
    })
    assert config.bf16.enabled and config.optimizer.params["betas"] == [0.9, 0.95]
    assert config.zero_optimization.reduce_bucket_size == 500_000_000
    assert config.zero_optimization.stage3_gather_16bit_weights_on_model_save is True
    assert config.zero_optimization.overlap_comm is True  # DeepSpeed's stage-3 default
    assert config.aio.intra_op_parallelism == 2 and config.gradient_clipping == 0.0


@pytest.mark.parametrize("given, message", [
    ({"fp16": {"enabled": True, "loss_scale_windw": 100}},
     r"fp16.loss_scale_windw: unknown key \(did you mean 'loss_scale_window'\?\)"),
    ({"zero_optimization": {"stage": 2, "offload_optimizer": {"devise": "cpu"}}},
     r"zero_optimization.offload_optimizer.devise: unknown key \(did you mean 'device'\?\)"),
    ({"gradient_cliping": 1.0}, r"gradient_cliping: unknown key \(did you mean 'gradient_clipping'\?\)"),
    ({"fp16": {"enabled": "yes"}}, "fp16.enabled must be true or false, got 'yes'"),
    ({"steps_per_print": 2.5}, "steps_per_print must be an integer, got 2.5"),
    ({"steps_per_print": float("-inf")}, "steps_per_print must be an integer, got -inf"),
    ({"zero_optimization": {"stage": 4}}, "zero_optimization.stage must be one of 0, 1, 2, 3, got 4"),
    ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu"}}},
     "zero_optimization.offload_optimizer.device must be one of none, cpu, nvme"),
    ({"scheduler": {"type": "WarmupLr"}}, r"scheduler.type must be one of .* \(did you mean 'WarmupLR'\?\)"),
    ({"fp16": {"enabled": True}, "bf16": {"enabled": True}}, "both true"),
    ({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}, "offload_param needs stage 3"),
    ({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}}, "nvme_path is required"),
    ({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, "offload_optimizer needs a ZeRO stage"),
    ({"optimizer": {"params": {"lr": 1}}}, "optimizer.params is given without optimizer.type"),
    ({"fp16": []}, "fp16 must be a JSON object"),
])
def test_errors_name_the_key(given, message):
    with pytest.raises(ConfigError, match=message):
        DeepSpeedConfig({"train_batch_size": 4, **given})


@pytest.mark.parametrize(("given", "message"), [
    ({"flops_profiler": {"enabled": True}}, "flops_profiler.enabled: True is not supported by deepspeed_ext"),
    ({"progressive_layer_drop": {"enabled": True}}, "progressive_layer_drop.enabled: True is not supported"),
    ({"curriculum_learning": {"enabled": True}}, "curriculum_learning.enabled: True is not supported"),
    ({"elasticity": {"enabled": True}}, "elasticity.enabled: True is not supported"),
    ({"quantize_training": {"enabled": True}}, "quantize_training.enabled: True is not supported"),
    ({"torch_autocast": {"enabled": True, "dtype": "float16"}}, "torch_autocast.dtype: 'float16' is not supported"),
    ({"torch_autocast": {"enabled": True, "lower_precision_safe_modules": ["torch.nn.Linear"]}},
     "torch_autocast.lower_precision_safe_modules: .* is not supported"),
    ({"torch_autocast": {"enabled": True}, "bf16": {"enabled": True}}, "with bf16.enabled the model is already in it"),
    ({"zero_optimization": {"elastic_checkpoint": True}}, "zero_optimization.elastic_checkpoint: True is not"),
    ({"zero_optimization": {"legacy_stage1": True}}, "zero_optimization.legacy_stage1: True is not supported"),
    ({"zero_optimization": {"mics_shard_size": 2}}, "zero_optimization.mics_shard_size: 2 is not supported"),
    ({"fp16": {"enabled": True, "fp16_master_weights_and_grads": True}}, "fp16.fp16_master_weights_and_grads"),
    ({"sparse_gradients": True}, "sparse_gradients: True is not supported"),
    ({"compile": {"deepcompile": True}}, "compile.deepcompile: True is not supported"),
    ({"communication_data_type": "fp32", "bf16": {"enabled": True}},
     "communication_data_type: 'fp32' is not supported by deepspeed_ext with a bf16 model at ZeRO stage 0"),
    ({"data_types": {"grad_accum_dtype": "fp32"}, "bf16": {"enabled": True}}, "data_types.grad_accum_dtype: 'fp32'"),
    ({"communication_data_type": "fp16", "bf16": {"enabled": True}, "zero_optimization": {"stage": 2}},
     "communication_data_type: 'fp16' is not supported by deepspeed_ext with a bf16 model at ZeRO stage 2"),
    ({"communication_data_type": "fp32", "bf16": {"enabled": True},
      "zero_optimization": {"stage": 3, "zero_quantized_gradients": True}}, "choose one"),
    ({"communication_data_type": "fp8"}, "communication_data_type must be one of fp32, fp16, bf16"),
    ({"seq_parallel_communication_data_type": "fp32"}, "seq_parallel_communication_data_type: 'fp32' is not"),
    ({"fp32_reduce_scatter": True}, "fp32_reduce_scatter: unknown key"),  # not a DeepSpeed key either
    ({"gradient_accumulation_dtype": "fp32"}, "gradient_accumulation_dtype: unknown key"),
    ({"zero_optimization": {"stage": 2, "cpu_offload": True, "offload_optimizer": {"device": "cpu"}}},
     "cpu_offload and zero_optimization.offload_optimizer are both given"),
    ({"checkpoint": {"tag_validation": "sometimes"}}, "checkpoint.tag_validation must be one of Ignore, Warn, Fail"),
])
def test_keys_not_acted_on_are_refused(given, message):
    with pytest.raises(ConfigError, match=message):
        DeepSpeedConfig({"train_batch_size": 4, **given})


def test_keys_that_match_what_happens_here_are_accepted_silently(recwarn):
    config = DeepSpeedConfig({
        "train_batch_size": 4, "flops_profiler": {"enabled": False, "profile_step": 3},
        "elasticity": {"enabled": False, "max_train_batch_size": 8}, "torch_autocast": {"enabled": False},
        "communication_data_type": "bfloat16", "data_types": {"grad_accum_dtype": "bf16"}, "bf16": {"enabled": True},
        "pipeline": {"stages": 2}, "timers": {"throughput": {"enabled": True}},
        "checkpoint": {"tag_validation": "fail", "writer": {"type": "fast"}},
        "zero_optimization": {"stage": 3, "cpu_offload": True, "cpu_offload_params": True,
                              "cpu_offload_use_pin_memory": True, "memory_efficient_linear": False,
                              "load_from_fp32_weights": True}})
    assert not recwarn.list
    assert config.checkpoint.tag_validation == "Fail"
    assert config.zero_optimization.offload_optimizer.device == "cpu"
    assert config.zero_optimization.offload_param.device == "cpu"


@pytest.mark.parametrize("source", [[{"train_batch_size": 4}], 4, None])
def test_a_config_that_is_not_a_dict_or_a_path_is_refused(source):
    with pytest.raises(ConfigError, match="the DeepSpeed config must be a dict, a path to a JSON file or JSON text"):
        DeepSpeedConfig(source)


def test_loads_files_and_json_text(tmp_path):
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps({"train_batch_size": 8, "fp16": {"enabled": True}}))
    assert DeepSpeedConfig(path).fp16.enabled and DeepSpeedConfig(str(path)).train_batch_size == 8
    assert load_config('{"train_batch_size": 2}') == {"train_batch_size": 2}
    source = {"train_batch_size": 8, "fp16": {"enabled": True}}
    DeepSpeedConfig(source).fp16.enabled = False
    assert source["fp16"]["enabled"] is True  # the caller's dict is not touched
    with pytest.raises(ConfigError, match="config file not found: .*missing.json"):
        DeepSpeedConfig(tmp_path / "missing.json")
    path.write_text('{"train_batch_size": 8,\n "fp16": {"enabled": tru}}')
    with pytest.raises(ConfigError, match=r"ds_config.json is not valid JSON: .* line 2"):
        DeepSpeedConfig(path)
    with pytest.raises(ConfigError, match="'train_batch_size' appears twice"):
        load_config('{"train_batch_size": 2, "train_batch_size": 4}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DeepSpeedConfig({"train_batch_size": 2})  # a clean config warns about nothing


@pytest.mark.parametrize(("section", "message"), [
    ({"optimizer": {"type": "Adam", "params": {"lr": "1e-3"}}}, "optimizer.params.lr must be a number, got '1e-3'"),
    ({"optimizer": {"type": "AdamW", "params": {"weight_decay": "0.1"}}}, "optimizer.params.weight_decay must be a"),
    ({"optimizer": {"type": "Adam", "params": {"betas": [0.9]}}}, "optimizer.params.betas must be a list of 2"),
    ({"optimizer": {"type": "SGD", "params": {"lr": 0.1, "nesterov": 1}}}, "optimizer.params.nesterov must be true"),
    ({"scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": "0.01"}}},
     "scheduler.params.warmup_max_lr must be a number or a list of numbers, got '0.01'"),
    ({"scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": "100"}}},
     "scheduler.params.total_num_steps must be a number"),
    ({"scheduler": {"type": "WarmupLR", "params": {"warmup_type": 1}}}, "scheduler.params.warmup_type must be a"),
])
def test_optimizer_and_scheduler_params_are_type_checked(section, message):
    import deepspeed_ext

    config = {"train_batch_size": 1, "optimizer": {"type": "Adam", "params": {"lr": 1e-3}}, **section}
    with pytest.raises(ConfigError, match=message):
        deepspeed_ext.initialize(model=torch.nn.Linear(3, 1), config=config)


def test_torch_autocast_runs_the_forward_in_bf16():
    import deepspeed_ext

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x)
    config = {"train_batch_size": 4, "optimizer": {"type": "Adam", "params": {"lr": 1e-3}},
              "torch_autocast": {"enabled": True, "dtype": "bfloat16"}}
    engine = deepspeed_ext.initialize(model=model, config=config)[0]
    out = engine(x)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)
    engine.backward(out.float().sum())
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in engine.module.parameters())
