"""Bad input to a pipeline gives a clear error on every rank, never a hang: more stages than
layers, a world size the stages do not divide, no scalar loss on the last stage, no data
where a stage reads it, a shape a stage cannot take, and a layer failing on one rank of one
data-parallel pipeline (the other pipeline hears of it too). Activations whose shape changes
between batches are renegotiated, not refused."""

import torch
from torch import nn

import deepspeed_ext as deepspeed
from deepspeed_ext.pipe import LayerSpec, PipelineModule
from tests.pipe import models
from tests.ranks import run_ranks


def outcome(build, run=None) -> str:
    """'ok', or the error this rank raised as 'Type: message'."""
    deepspeed.init_distributed(verbose=False)
    try:
        engine = build()
        if run is not None:
            run(engine)
    except Exception as error:  # noqa: BLE001 - every rank reports what it raised
        return f"{type(error).__name__}: {error}"
    return "ok"


def engine_of(specs, stages, loss_fn=nn.functional.cross_entropy, **extra):
    module = PipelineModule(specs, num_stages=stages, loss_fn=loss_fn)
    return deepspeed.initialize(model=module, config=models.config(2, 2, **extra))[0]


def too_many_stages():
    return outcome(lambda: PipelineModule([LayerSpec(nn.Linear, 8, 5)], num_stages=2))


def indivisible_world():
    return outcome(lambda: PipelineModule(models.dense_specs(), num_stages=2))


def train_once(data_iter, stages=2, specs=None, loss_fn=nn.functional.cross_entropy):
    def run(engine):
        engine.train_batch(data_iter(engine) if callable(data_iter) else data_iter)
    return outcome(lambda: engine_of(specs or models.dense_specs(), stages, loss_fn), run)


def dense_stream(engine, shape=(2, 8)):
    return iter([(torch.randn(*shape), torch.randint(0, models.CLASSES, shape[:1])) for _ in range(2)])


def no_loss_fn():
    return train_once(dense_stream, loss_fn=None)


def no_data():
    return train_once(None)


def wrong_shape():
    return train_once(lambda engine: dense_stream(engine, (2, 3, 8)))  # logits (2, 3, 5) for labels (2,)


def one_rank_fails():
    specs = [LayerSpec(nn.Linear, 8, 16), LayerSpec(models.FailOn, 3, 2), LayerSpec(nn.Linear, 16, 5)]
    return train_once(dense_stream, stages=3, specs=specs)


def fails_then_again():
    """The batch after a failure is refused: the stages' channels may hold its stale messages."""
    specs = [LayerSpec(nn.Linear, 8, 16), LayerSpec(models.FailOn, 1, 1), LayerSpec(nn.Linear, 16, 5)]
    deepspeed.init_distributed(verbose=False)
    engine = engine_of(specs, 2)
    first = outcome(lambda: engine, lambda e: e.train_batch(dense_stream(e)))
    second = outcome(lambda: engine, lambda e: e.train_batch(dense_stream(e)))
    return first, second


def test_bad_partitions_fail_on_every_rank():
    assert all("1 layers cannot fill 2 stages" in r for r in run_ranks(too_many_stages, 2))
    assert all("num_stages=2 does not divide the world size 3" in r for r in run_ranks(indivisible_world, 3))


def test_bad_batches_fail_on_every_rank():
    for job, where, expected in ((no_loss_fn, "rank 1 (stage 1)", "not a scalar loss: give PipelineModule a loss_fn"),
                                 (no_data, "rank 0 (stage 0)", "has no data: pass data_iter"),
                                 (wrong_shape, "rank 1 (stage 1)", "Expected target size [2, 5], got [2]")):
        results = run_ranks(job, 2)
        assert all(r.startswith(f"PipelineError: pipeline batch failed on {where}") for r in results), results
        assert all(expected in r for r in results), results


def test_a_failing_rank_stops_every_pipeline():
    results = run_ranks(one_rank_fails, 6, timeout=120)  # 3 stages x 2 pipelines; rank 3 is pipeline 1's stage 1
    assert all("failed on rank 3 (stage 1): RuntimeError: layer broke on purpose at call 2" in r for r in results)
    first, second = zip(*run_ranks(fails_then_again, 2))
    assert all("layer broke on purpose" in r for r in first)
    assert all("an earlier batch failed" in r for r in second)


def shapes_change() -> list[float]:
    deepspeed.init_distributed(verbose=False)
    engine = engine_of(models.tied_specs(), 2, models.token_loss)
    losses = []
    for length in (6, 9, 3):  # a new sequence length each batch, and within one
        generator = torch.Generator().manual_seed(length)
        batches = [(torch.randint(0, models.VOCAB, (2, length + j), generator=generator),
                    torch.randint(0, models.VOCAB, (2, length + j), generator=generator)) for j in range(2)]
        losses.append(float(engine.train_batch(iter(batches))))
    return losses


def test_activation_shapes_are_renegotiated():
    results = run_ranks(shapes_change, 2)
    assert results[0] == results[1] and all(torch.isfinite(torch.tensor(results[0])))
