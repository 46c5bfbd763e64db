"""One param's full fp32 value, gradient or optimizer state, whatever ZeRO stage holds it, and
writing one back (DeepSpeed's safe_get_full_* / safe_set_full_* / safe_*_local_*).

The engine links each trainable param to where its training state lives (`link_params`):
under ZeRO a param's fp32 master, gradient and optimizer states are pieces of flat shards on
several ranks; at stage 0 they are whole on every rank. The `full` calls are collective
(every rank calls them, with the same value for the setters) and a full write of the fp32
value reaches the model's own copy at once; the `local` ones return or write this rank's
pieces only (concatenated, 1-D), and a local write reaches the other ranks' copies of the
param at the next step (stages 1-2) or gather (stage 3). A param that is not trained by an
engine gives None, as in DeepSpeed. Gradients are read as the engine holds them: with fp16,
still multiplied by the loss scale.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from deepspeed_ext.runtime.weak_hooks import WeakAttribute

KINDS = ("fp32", "grad", "state")


class ReplicatedLink:
    """Stage 0: every rank holds the param's master (or the param itself), its gradient and
    its optimizer state whole. Links hang on the params and refer to the engine's parts
    weakly, so the params do not keep a dropped engine alive."""

    param, master, optimizer, reducer = WeakAttribute(), WeakAttribute(), WeakAttribute(), WeakAttribute()

    def __init__(self, param: torch.nn.Parameter, master: torch.Tensor, optimizer, reducer) -> None:
        self.param, self.master, self.optimizer, self.reducer = param, master, optimizer, reducer

    def _tensor(self, kind: str, key: str | None) -> torch.Tensor | None:
        if kind == "fp32":
            return self.master
        if kind == "grad":
            if self.reducer is not None:
                self.reducer.finish()  # the all-reduce of the last backward may still be in flight
            return self.param.grad
        return self.optimizer.state.get(self.master, {}).get(key)

    def full(self, kind: str, key: str | None = None) -> torch.Tensor | None:
        tensor = self._tensor(kind, key)
        return None if tensor is None else tensor.detach().float().clone()

    local = full

    def set_full(self, kind: str, value: torch.Tensor, key: str | None = None) -> None:
        target = self._tensor(kind, key)
        if target is None:
            raise ValueError(_nothing_to_set(kind, key))
        with torch.no_grad():
            target.copy_(value.reshape(target.shape))
            if kind == "fp32" and self.master is not self.param:
                self.param.copy_(value.reshape(self.param.shape))

    set_local = set_full


class ShardLink:
    """Stages 1-3: the param is element range(s) of a ShardedGroup on one or more ranks."""

    zero, group = WeakAttribute(), WeakAttribute()

    def __init__(self, zero, group, index: int) -> None:
        self.zero, self.group, self.index = zero, group, index
        param = group.params[index]
        self.shape = param.ds_shape if hasattr(param, "ds_shape") else param.shape

    def _flat(self, kind: str, key: str | None) -> torch.Tensor | None:
        """The rank's whole shard the param's pieces sit in, for this kind."""
        if kind == "fp32":
            return self.group.master.data
        if kind == "grad":
            return self.group.grad_shard
        return self.zero.optimizer.state.get(self.group.master, {}).get(key)

    def _pieces(self):
        return [(first, count, offset) for index, first, count, offset in self.group.pieces if index == self.index]

    def local(self, kind: str, key: str | None = None) -> torch.Tensor | None:
        with self.zero.resident():
            flat = self._flat(kind, key)
            if flat is None:
                return None
            return torch.cat([flat.narrow(0, offset, count).float() for _, count, offset in self._pieces()]
                             or [flat.new_empty(0, dtype=torch.float32)])

    def full(self, kind: str, key: str | None = None) -> torch.Tensor | None:
        numel = int(torch.Size(self.shape).numel())
        # one all-reduce: the param's elements, then a count of the ranks that hold this kind
        # (every rank takes part, so a missing gradient or state must come out the same everywhere)
        buffer = torch.zeros(numel + 1, dtype=torch.float32, device=self.zero.device)  # the backend's device
        with self.zero.resident():
            flat = self._flat(kind, key)
            if flat is not None:
                buffer[numel] = 1.0
                for first, count, offset in self._pieces():
                    buffer.narrow(0, first, count).copy_(flat.narrow(0, offset, count))
        world = dist.get_world_size() if dist.is_initialized() else 1
        if world > 1:
            dist.all_reduce(buffer)  # the ranks' pieces are disjoint: the sum is the param
        return buffer[:numel].view(self.shape) if int(buffer[numel].item()) == world else None

    def _write(self, kind: str, key: str | None, pieces) -> None:
        flat = self._flat(kind, key)
        if flat is None:
            raise ValueError(_nothing_to_set(kind, key))
        with torch.no_grad():
            for (_, count, offset), values in pieces:
                flat.narrow(0, offset, count).copy_(values)
                if kind == "fp32":  # the model-dtype copy follows the master
                    self.group.lp_shard.narrow(0, offset, count).copy_(values)

    def set_full(self, kind: str, value: torch.Tensor, key: str | None = None) -> None:
        flat_value = value.detach().reshape(-1).to(self.group.master.device, torch.float32)
        with self.zero.resident():
            self._write(kind, key, [(p, flat_value.narrow(0, p[0], p[1])) for p in self._pieces()])
        if kind == "fp32":
            self._refresh_param(flat_value)

    def set_local(self, kind: str, value: torch.Tensor, key: str | None = None) -> None:
        pieces = self._pieces()
        flat_value = value.detach().reshape(-1).to(self.group.master.device, torch.float32)
        if flat_value.numel() != sum(count for _, count, _ in pieces):
            raise ValueError(f"the value has {flat_value.numel()} elements; this rank holds "
                             f"{sum(count for _, count, _ in pieces)} of the param")
        starts = [sum(count for _, count, _ in pieces[:k]) for k in range(len(pieces))]
        with self.zero.resident():
            self._write(kind, key, [(p, flat_value.narrow(0, s, p[1])) for p, s in zip(pieces, starts)])

    def _refresh_param(self, flat_value: torch.Tensor) -> None:
        """The param as the model sees it: stage 1-2 its whole value (every rank was given it),
        stage 3 only if it is gathered right now."""
        param = self.group.params[self.index]
        if self.zero.stage < 3 or param.numel() == flat_value.numel():
            with torch.no_grad():
                param.data.copy_(flat_value.view(param.shape))


def _nothing_to_set(kind: str, key: str | None) -> str:
    if kind == "grad":
        return "the param has no gradient to set now: set it between a boundary backward() and step()"
    return f"the param has no optimizer state {key!r} to set: the optimizer creates its states at the first step()"


def link_params(engine) -> None:
    """Record on each trainable param of an engine where its training state lives."""
    if engine.zero is not None:
        for group in engine.zero.groups:
            for index, param in enumerate(group.params):
                param._ds_link = ShardLink(engine.zero, group, index)
    elif engine.optimizer is not None:
        masters = engine.masters.of(engine._trainable) if engine.masters else engine._trainable
        for param, master in zip(engine._trainable, masters):
            param._ds_link = ReplicatedLink(param, master, engine.basic_optimizer, engine.reducer)


def _link(param: torch.Tensor):
    return getattr(param, "_ds_link", None)


def _get(param, kind: str, key: str | None, local: bool):
    link = _link(param)
    if link is None:
        return None
    return link.local(kind, key) if local else link.full(kind, key)


def _set(param, kind: str, value: torch.Tensor, key: str | None, local: bool) -> None:
    link = _link(param)
    if link is None:
        raise ValueError("the param is not trained by a deepspeed_ext engine (or is frozen): nothing to set")
    (link.set_local if local else link.set_full)(kind, value, key)


def safe_get_full_fp32_param(param):
    return _get(param, "fp32", None, local=False)


def safe_get_full_grad(param):
    return _get(param, "grad", None, local=False)


def safe_get_full_optimizer_state(param, optim_state_key: str):
    return _get(param, "state", optim_state_key, local=False)


def safe_set_full_fp32_param(param, value: torch.Tensor) -> None:
    _set(param, "fp32", value, None, local=False)


def safe_set_full_grad(param, value: torch.Tensor) -> None:
    _set(param, "grad", value, None, local=False)


def safe_set_full_optimizer_state(param, value: torch.Tensor, optim_state_key: str) -> None:
    _set(param, "state", value, optim_state_key, local=False)


def safe_get_local_fp32_param(param):
    return _get(param, "fp32", None, local=True)


def safe_get_local_grad(param):
    return _get(param, "grad", None, local=True)


def safe_get_local_optimizer_state(param, optim_state_key: str):
    return _get(param, "state", optim_state_key, local=True)


def safe_set_local_fp32_param(param, value: torch.Tensor) -> None:
    _set(param, "fp32", value, None, local=True)


def safe_set_local_grad(param, value: torch.Tensor) -> None:
    _set(param, "grad", value, None, local=True)


def safe_set_local_optimizer_state(param, value: torch.Tensor, optim_state_key: str) -> None:
    _set(param, "state", value, optim_state_key, local=True)
