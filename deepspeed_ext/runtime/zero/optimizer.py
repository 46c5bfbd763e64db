"""ZeroOptimizer: steps a wrapped optimizer on this rank's fp32 shard of every param group and
publishes the result: stage 1-2 all-gather the updated flat buffers, stage 3 leaves the
shards where they are (params are gathered when a module next runs).

    reducer.finish()          gradients summed into the shards (grad_reduce.py)
    step(...)                 unscale, overflow check and clipping on the global norm
                              (one all-reduce), the wrapped optimizer's step, write-back
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.distributed as dist

from deepspeed_ext import comm
from deepspeed_ext.ops.cpu_adam import CPUOptimizer

from .grad_reduce import ShardedGradReducer
from .groups import ShardedGroup
from .nvme_swapper import OptimizerSwapper
from .param_swapper import ParamSwapper


class ZeroOptimizer:
    """What `engine.optimizer` is under ZeRO: param_groups, state_dict and load_state_dict
    are the wrapped optimizer's (schedulers and users read lr there)."""

    def __init__(self, groups: list[ShardedGroup], optimizer: torch.optim.Optimizer, stage: int,
                 reducer: ShardedGradReducer, allgather_bucket_size: int, device: torch.device,
                 after_step: Callable[[], None] | None = None, swapper: OptimizerSwapper | None = None) -> None:
        self.groups, self.optimizer, self.stage, self.reducer = groups, optimizer, stage, reducer
        self.allgather_bucket_size = allgather_bucket_size
        self.device = device
        self.after_step = after_step
        self.swapper = swapper  # NVMe offload: masters and states are in files between steps
        self.param_swapper: ParamSwapper | None = None  # stage-3 shards on NVMe; set by build_zero
        self.world_size, self.rank = reducer.world_size, reducer.rank
        # DeepSpeedCPUAdam & co. write the model-dtype copy in the same pass over memory
        self.writes_copies = isinstance(optimizer, CPUOptimizer) and bool(groups) and all(
            g.lp_shard.device.type == "cpu" for g in groups)

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.groups:
            group.grad_shard = None

    def step(self, inverse_scale: float, clip: float, check_overflow: bool) -> tuple[bool, float | None]:
        """One update from the summed gradients: (applied, global gradient norm or None).
        A step with inf / NaN gradients (fp16 overflow) is skipped on every rank."""
        grads = [group.gradients().float() for group in self.groups]  # no copy when already fp32
        norm = None
        if check_overflow or clip > 0:
            norm = self._global_norm(grads) * inverse_scale
            if not math.isfinite(norm):
                self._drop_grads()
                return False, None
        factor = inverse_scale
        if clip > 0:
            factor *= min(1.0, clip / (norm + 1e-6))  # torch's clip_grad_norm_ rule
        if factor != 1.0:
            torch._foreach_mul_(grads, factor)
        if self.swapper is None and self.param_swapper is None:
            self._update(range(len(self.groups)), grads)
        else:  # one sub-group in memory at a time
            for index in self.swapper.in_turn() if self.swapper else range(len(self.groups)):
                with self._shards_resident([self.groups[index]]):
                    self._update([index], grads)
        self._drop_grads()
        self.publish()
        return True, norm

    def _update(self, indices, grads: list[torch.Tensor]) -> None:
        """The wrapped optimizer's step on these groups (the others have no gradient, so it skips them)."""
        chosen = [self.groups[i] for i in indices]
        if not chosen:  # a pipeline stage without params: nothing to step
            return
        for index, group in zip(indices, chosen):
            group.master.grad = grads[index]
        if self.writes_copies:
            self.optimizer.step(fp16_param_groups=[[g.lp_shard] for g in self.groups])
        else:
            self.optimizer.step()
            with torch.no_grad():
                torch._foreach_copy_([g.lp_shard for g in chosen], [g.master for g in chosen])
        for group in chosen:
            group.master.grad = None

    def _global_norm(self, grads: list[torch.Tensor]) -> float:
        """The norm over every rank's shards: all ranks, since with a pipeline other stages
        hold other params; copies of a tied weight on a pipeline's later stages
        (ds_pipe_replicated) are counted once, on the stage that owns them."""
        parts = [_squares(group, grad) for group, grad in zip(self.groups, grads)]
        squares = torch.stack(parts).sum().to(self.device) if parts else torch.zeros((), device=self.device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(squares)
        return float(squares.sqrt())

    def _shards_resident(self, groups: list[ShardedGroup]):
        return self.param_swapper.group_resident(groups) if self.param_swapper else contextlib.nullcontext()

    @contextlib.contextmanager
    def resident(self):
        """A context in which every master, optimizer state and shard is in memory (checkpoints)."""
        with self.swapper.all_resident() if self.swapper else contextlib.nullcontext(), \
                self._shards_resident(self.groups):
            yield

    def _drop_grads(self) -> None:
        for group in self.groups:
            if self.stage == 1:  # stage 1 holds whole gradients instead until the next reduction
                group.grad_shard = None
            elif group.grad_shard is not None:
                group.grad_shard.zero_()

    def publish(self) -> None:
        """Stage 1-2: every rank's updated slice into every rank's flat buffer, in pieces of at
        most allgather_bucket_size elements (written in place: no second buffer)."""
        if self.stage < 3:
            for group in self.groups:
                world_size = group.layout.world_size
                if world_size == 1:
                    continue
                process_group = group.process_group if group.process_group is not None else self.reducer.group
                size = group.layout.partition_size
                for start in range(0, size, self.allgather_bucket_size):
                    count = min(self.allgather_bucket_size, size - start)
                    chunks = [group.flat.narrow(0, r * size + start, count) for r in range(world_size)]
                    comm.comms_log.record("parameters", "all_gather", chunks[group.rank])
                    comm.all_gather_in_place(chunks, group=process_group)
        if self.after_step is not None:
            self.after_step()

    def refresh_masters_from_model(self) -> None:
        """After the model's weights were replaced (a loaded module state): masters follow."""
        with torch.no_grad(), self.resident():
            for group in self.groups:
                group.master.copy_(group.lp_shard)

    def model_state_bytes(self) -> dict[str, int]:
        """Bytes of the shards this rank holds in memory for the optimizer: masters, optimizer
        states, gradients (and, with NVMe offload, the bytes in its swap files)."""
        states = sum(t.numel() * t.element_size() for s in self.optimizer.state.values() for t in s.values()
                     if torch.is_tensor(t) and t.dim() > 0)
        resident = {"master_weights": sum(g.master.numel() * g.master.element_size() for g in self.groups),
                    "optimizer_states": states,
                    "gradient_shards": sum(g.grad_shard.numel() * g.grad_shard.element_size() for g in self.groups
                                           if g.grad_shard is not None)}
        if self.swapper is None and self.param_swapper is None:
            return resident
        swappers = [s for s in (self.swapper, self.param_swapper) if s is not None]
        return {**resident, "swapped_to_nvme": sum(s.swapped_bytes() for s in swappers)}


def _squares(group: ShardedGroup, grad: torch.Tensor) -> torch.Tensor:
    replicated = {index for index, param in enumerate(group.params) if getattr(param, "ds_pipe_replicated", False)}
    if not replicated:
        return torch.linalg.vector_norm(grad) ** 2
    kept = [grad.narrow(0, offset, count) for index, _, count, offset in group.pieces if index not in replicated]
    return sum((torch.linalg.vector_norm(piece) ** 2 for piece in kept), grad.new_zeros(()))
