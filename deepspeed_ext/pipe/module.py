"""PipelineModule: a model written as a list of layers, cut into pipeline stages, each rank
building only its own stage's layers (DeepSpeed's deepspeed.pipe.PipelineModule).

    layers = [LayerSpec(Embed, vocab, 512)] + [LayerSpec(Block, 512) for _ in range(8)] + [LayerSpec(Head, 512)]
    model = PipelineModule(layers, num_stages=4, loss_fn=torch.nn.functional.cross_entropy)

Each stage's layers run one after another, `x = layer(x)`, a tuple passed on as one value.
Modules are registered by their global layer index ("3.weight"), tied ones under
"tied_modules.<key>", as in DeepSpeed.
"""

from __future__ import annotations

import functools
import itertools
import random
import re

import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..runtime import activation_checkpointing
from ..utils.logging import logger
from .partition import partition_balanced, partition_uniform
from .topology import PipeDataParallelTopology, PipelineParallelGrid, ProcessTopology

PARTITION_METHODS = ("parameters", "uniform", "type:<regex>")


class LayerSpec:
    """A layer to build later, on the stage that owns it: typename(*args, **kwargs)."""

    def __init__(self, typename, *module_args, **module_kwargs) -> None:
        if not (isinstance(typename, type) and issubclass(typename, nn.Module)):
            raise TypeError(f"LayerSpec needs an nn.Module subclass, got {typename!r}")
        self.typename, self.module_args, self.module_kwargs = typename, module_args, module_kwargs

    def build(self, log: bool = False) -> nn.Module:
        if log:
            logger.info(f"building {self!r}")
        return self.typename(*self.module_args, **self.module_kwargs)

    def __repr__(self) -> str:
        arguments = [repr(a) for a in self.module_args] + [f"{k}={v!r}" for k, v in self.module_kwargs.items()]
        return f"{self.typename.__name__}({', '.join(arguments)})"


class TiedLayerSpec(LayerSpec):
    """A layer whose `tied_weight_attr` params are shared by every layer with the same key
    (an embedding reused as the output head): each stage that uses it holds a copy, the
    copies start equal and their gradients are summed across those stages before a step.
    forward_fn(module, x), when given, runs in place of module(x)."""

    def __init__(self, key, typename, *module_args, forward_fn=None, tied_weight_attr="weight",
                 **module_kwargs) -> None:
        super().__init__(typename, *module_args, **module_kwargs)
        self.key, self.forward_fn = key, forward_fn
        self.tied_weight_attr = [tied_weight_attr] if isinstance(tied_weight_attr, str) else list(tied_weight_attr)


def set_random_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass


class PipelineModule(nn.Module):
    """The layers of one stage of a pipeline. num_stages (or a topology) says how many
    stages; partition_method how layers are cut: "parameters" (balanced trainable param
    counts), "uniform" (balanced layer counts) or "type:<regex>" (balanced counts of layers
    whose class name matches). With activation_checkpoint_interval k, every run of k layers
    is recomputed in backward instead of stored (those with params, or whose class is in
    checkpointable_layers)."""

    def __init__(self, layers, num_stages: int | None = None, topology: ProcessTopology | None = None, loss_fn=None,
                 seed_layers: bool = False, seed_fn=None, base_seed: int = 1234, partition_method: str = "parameters",
                 activation_checkpoint_interval: int = 0,
                 activation_checkpoint_func=activation_checkpointing.checkpoint,
                 checkpointable_layers: list[str] | None = None, dynamic_shape: bool = False) -> None:
        super().__init__()
        # dynamic_shape: DeepSpeed's switch for activations whose shape changes; here a changed
        # layout is always noticed and renegotiated (pipe/p2p.py), so it changes nothing
        self.dynamic_shape = dynamic_shape
        if num_stages is None and topology is None:
            raise ValueError("PipelineModule needs num_stages or topology")
        comm.init_distributed(verbose=False)
        self.global_rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if topology is None:
            if num_stages < 1 or self.world_size % num_stages:
                raise ValueError(f"PipelineModule: num_stages={num_stages} does not divide the world size "
                                 f"{self.world_size} (each stage needs the same number of data-parallel ranks)")
            topology = PipeDataParallelTopology(num_pp=num_stages, num_dp=self.world_size // num_stages)
        elif num_stages is not None and num_stages != topology.get_dim("pipe"):
            raise ValueError(f"PipelineModule: num_stages={num_stages} but the topology has "
                             f"{topology.get_dim('pipe')} pipe stages")
        self._topo = topology
        self.num_stages = max(topology.get_dim("pipe"), 1)
        self._layer_specs = list(layers)
        if len(self._layer_specs) < self.num_stages:
            raise ValueError(f"PipelineModule: {len(self._layer_specs)} layers cannot fill {self.num_stages} stages "
                             "(each stage needs at least one layer)")
        self._grid = PipelineParallelGrid(topology=topology)
        self.stage_id = self._grid.get_stage_id()
        self.loss_fn = loss_fn
        self.seed_layers, self.seed_fn, self.base_seed = seed_layers, seed_fn, base_seed
        if activation_checkpoint_interval < 0:
            raise ValueError(f"activation_checkpoint_interval must be >= 0, got {activation_checkpoint_interval}")
        self.activation_checkpoint_interval = activation_checkpoint_interval
        self.activation_checkpoint_func = activation_checkpoint_func
        self.checkpointable_layers = checkpointable_layers
        self.parts = self._partition(partition_method)
        self._local_start, self._local_stop = self.parts[self.stage_id], self.parts[self.stage_id + 1]
        self.tied_modules = nn.ModuleDict()
        self.tied_weight_attrs: dict[str, list[str]] = {}
        self.forward_funcs: list = []
        self._build()
        self.tied_comms = self._tie_groups()
        self._synchronize_tied_weights()

    # ---- partitioning ---------------------------------------------------------------
    def _partition(self, method: str) -> list[int]:
        lowered = method.lower()
        if lowered == "uniform":
            parts = partition_uniform(len(self._layer_specs), self.num_stages)
        elif lowered == "parameters":
            parts = partition_balanced(self._count_layer_params(), self.num_stages)
        elif lowered.startswith("type:"):
            pattern = method.split(":", 1)[1]
            matching = self._find_layer_type(pattern)
            if not matching:
                raise ValueError(f"partition_method {method!r}: no layer's class name matches {pattern!r}")
            weights = [1 if index in matching else 0 for index in range(len(self._layer_specs))]
            parts = partition_balanced(weights, self.num_stages)
        else:
            raise ValueError(f"partition_method must be one of {', '.join(PARTITION_METHODS)}, got {method!r}")
        if self.global_rank == 0:
            lines = [f"pipeline partition ({method}): {self.num_stages} stages, boundaries {parts}"]
            for stage in range(self.num_stages):
                names = ", ".join(f"{i}: {_layer_name(self._layer_specs[i])}" for i in range(parts[stage],
                                                                                          parts[stage + 1]))
                lines.append(f"  stage {stage}: {names}")
            if self.loss_fn is not None:
                lines.append(f"  loss: {_layer_name(self.loss_fn)}")
            logger.info("\n".join(lines))
        return parts

    def _count_layer_params(self) -> list[int]:
        """Trainable params per layer, specs built on the meta device (no memory, no init)."""
        counts = []
        for layer in self._layer_specs:
            if isinstance(layer, LayerSpec):
                with torch.device("meta"):
                    layer = layer.build()
            counts.append(sum(p.numel() for p in layer.parameters() if p.requires_grad)
                          if isinstance(layer, nn.Module) else 0)
        return counts

    def _find_layer_type(self, pattern: str) -> set[int]:
        regex = re.compile(pattern, re.IGNORECASE)
        return {index for index, layer in enumerate(self._layer_specs) if regex.search(_layer_name(layer))}

    # ---- building ---------------------------------------------------------------------
    def _build(self) -> None:
        for index in range(self._local_start, self._local_stop):
            spec = self._layer_specs[index]
            if self.seed_layers:
                (self.seed_fn or set_random_seed)(self.base_seed + index)
            if isinstance(spec, TiedLayerSpec):
                if spec.key not in self.tied_modules:
                    self.tied_modules[spec.key] = spec.build()
                    self.tied_weight_attrs[spec.key] = spec.tied_weight_attr
                module = self.tied_modules[spec.key]
                self.forward_funcs.append(functools.partial(spec.forward_fn, module) if spec.forward_fn else module)
            elif isinstance(spec, LayerSpec):
                module = spec.build()
                self.add_module(str(index), module)
                self.forward_funcs.append(module)
            elif isinstance(spec, nn.Module):
                self.add_module(str(index), spec)
                self.forward_funcs.append(spec)
            elif callable(spec):
                self.forward_funcs.append(spec)
            else:
                raise TypeError(f"PipelineModule layer {index} is {type(spec).__name__}: give a LayerSpec, "
                                "TiedLayerSpec, nn.Module or callable")

    def _tie_groups(self) -> dict[str, dict]:
        """Every tied key used on more than one stage gets a group per pipeline (data and
        model coordinate) of the stages using it; the lowest stage owns the weights, the
        copies elsewhere are marked ds_pipe_replicated (counted once in gradient norms)."""
        stages_of: dict = {}
        for index, spec in enumerate(self._layer_specs):
            if isinstance(spec, TiedLayerSpec):
                stages_of.setdefault(spec.key, set()).add(self.stage_owner(index))
        ties = {}
        topo = self._topo
        others = [axis for axis in topo.get_axis_names() if axis != "pipe"]
        for key in sorted(stages_of, key=str):
            stages = sorted(stages_of[key])
            if len(stages) < 2:
                continue
            for fixed in itertools.product(*(range(topo.get_dim(a)) for a in others)):
                coordinates = dict(zip(others, fixed))
                ranks = [topo.get_rank(pipe=s, **coordinates) for s in stages]
                group = dist.new_group(ranks=ranks)
                if self.global_rank in ranks:
                    ties[key] = {"ranks": ranks, "group": group}
            if key in ties and self.stage_id != stages[0]:
                for param in self._tied_weights(key):
                    param.ds_pipe_replicated = True
        return ties

    def _tied_weights(self, key) -> list[torch.Tensor]:
        module = self.tied_modules[key]
        return [functools.reduce(getattr, attr.split("."), module) for attr in self.tied_weight_attrs[key]]

    def get_tied_weights_and_groups(self) -> list[tuple[torch.Tensor, object]]:
        return [(weight, tie["group"]) for key, tie in self.tied_comms.items() for weight in self._tied_weights(key)]

    def _synchronize_tied_weights(self) -> None:
        """Every copy of a tied weight starts as the owner's (its lowest stage's)."""
        for key, tie in self.tied_comms.items():
            for weight in self._tied_weights(key):
                dist.broadcast(weight.data, src=tie["ranks"][0], group=tie["group"])

    def allreduce_tied_weight_gradients(self) -> None:
        """Sum each tied weight's gradient over the stages that use it."""
        for weight, group in self.get_tied_weights_and_groups():
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            dist.all_reduce(weight.grad, group=group)

    # ---- running -----------------------------------------------------------------------
    def forward(self, forward_input):
        interval = self.activation_checkpoint_interval
        funcs = self.forward_funcs
        if interval == 0 or not torch.is_grad_enabled():
            return _run(funcs, forward_input)
        x = forward_input
        for start in range(0, len(funcs), interval):
            chunk = funcs[start:start + interval]
            if self._is_checkpointable(chunk):
                inputs = x if isinstance(x, tuple) else (x,)
                x = self.activation_checkpoint_func(functools.partial(_run_unpacked, chunk), *inputs)
            else:
                x = _run(chunk, x)
        return x

    def _is_checkpointable(self, funcs) -> bool:
        modules = [module_of(f) for f in funcs]
        if self.checkpointable_layers is not None:
            return all(type(m).__name__ in self.checkpointable_layers for m in modules)
        return any(isinstance(m, nn.Module) and any(True for _ in m.parameters()) for m in modules)

    def set_checkpoint_interval(self, interval: int) -> None:
        if interval < 0:
            raise ValueError(f"activation_checkpoint_interval must be >= 0, got {interval}")
        self.activation_checkpoint_interval = interval

    # ---- what DeepSpeed users query ---------------------------------------------------------
    def partitions(self) -> list[int]:
        return list(self.parts)

    def stage_owner(self, layer_idx: int) -> int:
        if not 0 <= layer_idx < len(self._layer_specs):
            raise ValueError(f"layer {layer_idx} is not in this model of {len(self._layer_specs)} layers")
        return next(s for s in range(self.num_stages) if self.parts[s] <= layer_idx < self.parts[s + 1])

    def topology(self) -> ProcessTopology:
        return self._topo

    def mpu(self) -> PipelineParallelGrid:
        return self._grid

    def num_pipeline_stages(self) -> int:
        return self.num_stages

    def local_layers(self) -> list[tuple[int, object]]:
        """(global layer index, the module or function) for each layer of this stage."""
        return list(zip(range(self._local_start, self._local_stop), self.forward_funcs))

    def layer_module(self, index: int) -> nn.Module | None:
        """The module holding global layer `index`'s params on this stage (the tied module
        for a tied layer), or None for a function or a layer of another stage."""
        if not self._local_start <= index < self._local_stop:
            return None
        spec = self._layer_specs[index]
        if isinstance(spec, TiedLayerSpec):
            return self.tied_modules[spec.key]
        func = self.forward_funcs[index - self._local_start]
        return func if isinstance(func, nn.Module) else None


def module_of(func):
    """The module behind a layer's forward function (a tied layer's forward_fn is a partial of it)."""
    return func.args[0] if isinstance(func, functools.partial) else func


def _run(funcs, x):
    for func in funcs:
        x = func(x)
    return x


def _run_unpacked(funcs, *inputs):
    return _run(funcs, inputs[0] if len(inputs) == 1 else inputs)


def _layer_name(layer) -> str:
    if isinstance(layer, LayerSpec):
        return layer.typename.__name__
    if isinstance(layer, nn.Module):
        return type(layer).__name__
    return getattr(layer, "__name__", type(layer).__name__)

