"""PipelineEngine around its schedule: eval_batch equals the plain model's forward, a stage
without parameters, training data given to initialize(), the pipeline config section, and
what only train_batch / eval_batch may do."""

import contextlib
import io

import pytest
import torch
from torch import nn

import deepspeed_ext as deepspeed
from deepspeed_ext.pipe import LayerSpec, PipelineModule
from tests.pipe import models
from tests.ranks import run_ranks


def evaluate(stages: int) -> dict:
    deepspeed.init_distributed(verbose=False)
    module = models.pipeline(models.dense_specs(), stages, nn.functional.cross_entropy)
    engine = deepspeed.initialize(model=module, config=models.config(2, 3))[0]
    x, y = models.batches("dense", 1, 6)[0]
    chunks = list(zip(x.split(2), y.split(2)))
    loss, logits = engine.eval_batch(iter(chunks), return_logits=True)
    per_micro = engine.eval_batch(iter(chunks), reduce_output=None)
    outputs = engine.eval_batch(iter(chunks), compute_loss=False)
    return {"loss": loss, "logits": logits, "per_micro": per_micro, "outputs": outputs}


def test_eval_batch_equals_the_plain_forward():
    results = run_ranks(evaluate, 2, 2)
    plain = models.plain_model(models.dense_specs())
    x, y = models.batches("dense", 1, 6)[0]
    with torch.no_grad():
        logits = torch.cat([plain(part) for part in x.split(2)])  # the same matmul shapes as the pipeline's
        per_micro = [nn.functional.cross_entropy(lx, ly) for lx, ly in zip(logits.split(2), y.split(2))]
    last = results[1]
    assert torch.equal(last["logits"], logits) and torch.equal(last["outputs"], logits)
    for result in results:  # the loss reaches every stage
        assert torch.allclose(result["loss"], torch.stack(per_micro).mean(), atol=1e-7)
        assert torch.allclose(torch.stack(result["per_micro"]), torch.stack(per_micro), atol=1e-7)
    assert results[0]["logits"] is None and results[0]["outputs"] is None


def parameterless_stage(zero: int) -> dict:
    deepspeed.init_distributed(verbose=False)
    specs = [LayerSpec(nn.Linear, 8, 16), LayerSpec(nn.Linear, 16, models.CLASSES), torch.tanh, LayerSpec(nn.Identity)]
    module = PipelineModule(specs, num_stages=2, loss_fn=nn.functional.cross_entropy, partition_method="uniform",
                            seed_layers=True, base_seed=models.BASE_SEED)
    engine = deepspeed.initialize(model=module, config=models.config(2, 2, zero_optimization={"stage": zero}))[0]
    data = models.micro_batches(models.batches("dense", 2, 4), 2, 2, 0, 1)
    losses = [float(engine.train_batch(data)) for _ in range(2)]
    return {"losses": losses, "params": sum(p.numel() for p in engine.module.parameters()),
            "state": models.gathered_state(engine)}


@pytest.mark.parametrize("zero", [0, 1])
def test_a_stage_without_parameters_trains(zero):
    results = run_ranks(parameterless_stage, 2, zero)
    assert results[1]["params"] == 0 and results[0]["params"] > 0
    specs = [LayerSpec(nn.Linear, 8, 16), LayerSpec(nn.Linear, 16, models.CLASSES), torch.tanh, LayerSpec(nn.Identity)]
    losses, state = models.train_plain(specs, nn.functional.cross_entropy, models.batches("dense", 2, 4), 2, 2, 1)
    assert results[0]["losses"] == pytest.approx(losses, abs=1e-6)
    for name, value in state.items():
        assert torch.equal(results[0]["state"][name], value), name


def from_training_data() -> tuple[list[float], list[float]]:
    deepspeed.init_distributed(verbose=False)
    x, y = models.batches("dense", 1, 16)[0]
    module = models.pipeline(models.dense_specs(), 2, nn.functional.cross_entropy)
    config = {**models.config(2, 2), "steps_per_print": 1}
    engine = deepspeed.initialize(model=module, config=config, training_data=torch.utils.data.TensorDataset(x, y))[0]
    assert engine.is_first_stage() != engine.is_last_stage() and engine.micro_batches == 2
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        losses = [float(engine.train_batch()) for _ in range(5)]  # 5 batches of 4 rows: a second epoch begins
    reported = [float(line.split("loss ")[1].split(",")[0]) for line in printed.getvalue().splitlines()
                if line.startswith("[deepspeed_ext] step")]
    return losses, reported


def test_training_data_from_initialize_repeats():
    results = run_ranks(from_training_data, 4)
    (first, reported), (second, _) = results[:2]
    assert first == second and len(first) == 5
    assert reported == [round(loss, 4) for loss in first]  # rank 0 prints each batch's own loss


def refusals() -> dict:
    deepspeed.init_distributed(verbose=False)
    errors = {}
    module = models.pipeline(models.dense_specs(), 2, nn.functional.cross_entropy)
    for name, extra in (("stages", {"pipeline": {"stages": 4}}), ("zero2", {"zero_optimization": {"stage": 2}}),
                        ("schedule", {"pipeline": {"schedule": "gpipe"}}),
                        ("fp32_sums", {"bf16": {"enabled": True}, "zero_optimization": {"stage": 1},
                                       "data_types": {"grad_accum_dtype": "fp32"}})):
        try:
            deepspeed.initialize(model=module, config=models.config(2, 2, **extra))
        except deepspeed.ConfigError as error:
            errors[name] = str(error)
    engine = deepspeed.initialize(model=module, config=models.config(2, 2, pipeline={"stages": 2, "partition": "x"}))[0]
    for call in ("forward", "backward", "step"):
        try:
            getattr(engine, call)(torch.zeros(1))
        except RuntimeError as error:
            errors[call] = str(error)
    return errors


def test_config_section_and_whole_batch_calls():
    for errors in run_ranks(refusals, 2):
        assert "pipeline.stages is 4 but the PipelineModule has 2 stages" in errors["stages"]
        assert "stage 2 cannot be used with a pipeline" in errors["zero2"]
        assert "pipeline.schedule" in errors["schedule"] and "zb_h1" in errors["schedule"]
        assert "fp32 accumulation is not supported with a pipeline" in errors["fp32_sums"]
        assert all("call engine.train_batch()" in errors[c] for c in ("forward", "backward", "step"))
    with pytest.raises(deepspeed.ConfigError, match="pipeline.activation_checkpoint_interval applies to a "
                                                    "deepspeed_ext.pipe.PipelineModule"):
        deepspeed.initialize(model=nn.Linear(2, 2), config=models.config(1, 1, pipeline={
            "activation_checkpoint_interval": 2}))
    deepspeed.initialize(model=nn.Linear(2, 2), config=models.config(1, 1, pipeline={"stages": "auto"}))
