"""Layers, data and a single-process reference for the pipeline tests (importable by ranks)."""

from __future__ import annotations

import torch
from torch import nn

import deepspeed_ext as deepspeed
from deepspeed_ext.pipe import LayerSpec, PipelineModule, TiedLayerSpec
from deepspeed_ext.pipe.module import set_random_seed

WIDTH, CLASSES, VOCAB = 16, 5, 11
BASE_SEED = 1234


class Embed(nn.Embedding):
    """Token ids -> vectors; tied with the output head."""


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.linear(x))


class Pair(nn.Module):
    """Passes a tuple on: (hidden, a second tensor that also carries gradients)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x):
        if isinstance(x, tuple):
            hidden, side = x
            return torch.tanh(self.linear(hidden)) + side, side * 0.5
        return torch.tanh(self.linear(x)), x


class Merge(nn.Module):
    def forward(self, x):
        hidden, side = x
        return hidden + side


def head_logits(embed: nn.Embedding, hidden: torch.Tensor) -> torch.Tensor:
    return hidden @ embed.weight.t()


def mean_pool(x):
    return x.mean(dim=1)


def dense_specs(depth: int = 6) -> list:
    return ([LayerSpec(nn.Linear, 8, WIDTH)] + [LayerSpec(Block, WIDTH) for _ in range(depth)]
            + [LayerSpec(nn.Linear, WIDTH, CLASSES)])


def tied_specs(depth: int = 4) -> list:
    """Embedding ... tied output head over the vocabulary (a language-model shape)."""
    return ([TiedLayerSpec("embed", Embed, VOCAB, WIDTH)] + [LayerSpec(Block, WIDTH) for _ in range(depth)]
            + [TiedLayerSpec("embed", Embed, VOCAB, WIDTH, forward_fn=head_logits)])


def tuple_specs() -> list:
    return [LayerSpec(nn.Linear, 8, WIDTH), LayerSpec(Pair, WIDTH), LayerSpec(Pair, WIDTH), LayerSpec(Merge),
            LayerSpec(nn.Linear, WIDTH, CLASSES)]


def token_loss(logits, labels):
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def plain_model(specs) -> nn.Sequential:
    """The same layers in one process, built with the same seeds as seed_layers=True; a tied
    layer is one module used at each of its places."""
    layers, tied = [], {}
    for index, spec in enumerate(specs):
        set_random_seed(BASE_SEED + index)
        if isinstance(spec, TiedLayerSpec):
            module = tied.setdefault(spec.key, spec.build())
            layers.append(_Applied(module, spec.forward_fn) if spec.forward_fn else module)
        elif isinstance(spec, LayerSpec):
            layers.append(spec.build())
        else:
            layers.append(_Applied(None, spec))
    return nn.Sequential(*layers)


class _Applied(nn.Module):
    def __init__(self, module, fn) -> None:
        super().__init__()
        self.inner, self.fn = module, fn

    def forward(self, x):
        return self.fn(x) if self.inner is None else self.fn(self.inner, x)


def batches(kind: str, steps: int, global_batch: int, seed: int = 7) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        if kind == "tokens":
            x = torch.randint(0, VOCAB, (global_batch, 6), generator=generator)
            y = torch.randint(0, VOCAB, (global_batch, 6), generator=generator)
        else:
            x = torch.randn(global_batch, 8, generator=generator)
            y = torch.randint(0, CLASSES, (global_batch,), generator=generator)
        out.append((x, y))
    return out


def micro_batches(data, micro: int, accumulation: int, dp_rank: int, dp: int):
    """What one data-parallel replica reads: step by step, its share of each global batch
    cut into micro-batches (replica d's rows are d*micro*accumulation ... as a sampler would)."""
    for x, y in data:
        share = micro * accumulation
        xs, ys = x[dp_rank * share:(dp_rank + 1) * share], y[dp_rank * share:(dp_rank + 1) * share]
        for j in range(accumulation):
            yield xs[j * micro:(j + 1) * micro], ys[j * micro:(j + 1) * micro]


def config(micro: int, accumulation: int, **extra) -> dict:
    return {"train_micro_batch_size_per_gpu": micro, "gradient_accumulation_steps": accumulation,
            "optimizer": {"type": "Adam", "params": {"lr": 1e-2}}, "steps_per_print": 10**9, **extra}


def train_plain(specs, loss_fn, data, micro: int, accumulation: int, dp: int, extra: dict | None = None):
    """Single-process training on the same global batches: (losses, final state dict)."""
    model = plain_model(specs)
    engine, *_ = deepspeed.initialize(model=model, config=config(micro * dp, accumulation, **(extra or {})))
    losses = []
    for x, y in data:
        total = 0.0
        for j in range(accumulation):
            rows = torch.cat([torch.arange(d * micro * accumulation + j * micro, d * micro * accumulation + (j + 1) * micro)
                              for d in range(dp)])
            loss = loss_fn(engine(x[rows]), y[rows])
            engine.backward(loss)
            engine.step()
            total += float(loss.detach())
        losses.append(total / accumulation)
    return losses, {k: v.detach().float().clone() for k, v in engine.module.state_dict().items()}


def pipeline(specs, stages: int, loss_fn, **kwargs) -> PipelineModule:
    return PipelineModule(specs, num_stages=stages, loss_fn=loss_fn, seed_layers=True, base_seed=BASE_SEED, **kwargs)


def gathered_state(engine) -> dict:
    """Every layer's weights as the plain model names them, gathered from all stages (collective)."""
    import torch.distributed as dist

    mine = {}
    if engine.dp_rank == 0:
        for index, _ in engine.module.local_layers():
            layer = engine.module.layer_module(index)
            if layer is not None:
                prefix = f"{index}.inner." if _is_applied(engine.module._layer_specs[index]) else f"{index}."
                mine.update({prefix + k: v.detach().float().clone() for k, v in layer.state_dict().items()})
    everything = [None] * dist.get_world_size()
    dist.all_gather_object(everything, mine)
    return {k: v for part in everything for k, v in part.items()}


def _is_applied(spec) -> bool:
    return isinstance(spec, TiedLayerSpec) and spec.forward_fn is not None


LOSSES = {"dense": nn.functional.cross_entropy, "tokens": token_loss, "tuple": nn.functional.cross_entropy}
SPECS = {"dense": dense_specs, "tokens": tied_specs, "tuple": tuple_specs}


def data_kind(kind: str) -> str:
    return "tokens" if kind == "tokens" else "dense"


def train_pipeline(kind: str, stages: int, micro: int, accumulation: int, steps: int, extra: dict | None = None,
                   module_kwargs: dict | None = None, dtype: torch.dtype = torch.float32) -> dict:
    """A rank's part of pipeline training on models.batches: its losses, the whole model's
    final weights (gathered), what it held at most, and its step counters."""
    import torch.distributed as dist

    deepspeed.init_distributed(verbose=False)
    module = pipeline(SPECS[kind](), stages, LOSSES[kind], **(module_kwargs or {}))
    dp = dist.get_world_size() // stages
    engine, *_ = deepspeed.initialize(model=module, config=config(micro, accumulation, **(extra or {})))
    data = batches(data_kind(kind), steps, micro * accumulation * dp)
    stream = ((x.to(dtype) if x.is_floating_point() else x, y)
              for x, y in micro_batches(data, micro, accumulation, engine.dp_rank, dp))
    losses = [float(engine.train_batch(stream)) for _ in range(steps)]
    return {"losses": losses, "state": gathered_state(engine), "peak": engine.peak_micro_batches_held,
            "skipped": engine.skipped_steps, "steps": engine.global_steps, "lr": engine.get_lr(),
            "stage": engine.stage_id}


def reference(kind: str, micro: int, accumulation: int, steps: int, dp: int, extra: dict | None = None):
    return train_plain(SPECS[kind](), LOSSES[kind], batches(data_kind(kind), steps, micro * accumulation * dp), micro,
                       accumulation, dp, extra)


class FailOn(nn.Module):
    """Passes its input through, but raises on global rank `rank` at its `call`-th forward."""

    def __init__(self, rank: int, call: int) -> None:
        super().__init__()
        self.rank, self.call, self.calls = rank, call, 0

    def forward(self, x):
        import torch.distributed as dist

        self.calls += 1
        if dist.get_rank() == self.rank and self.calls == self.call:
            raise RuntimeError(f"layer broke on purpose at call {self.call}")
        return x
