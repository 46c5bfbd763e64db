"""The part of DeepSpeedEngine's API that Hugging Face Transformers' Trainer and Accelerate
drive (besides forward / backward / step): who decides the accumulation boundary, gradient
sync suspension, 16-bit state dicts at ZeRO-3, momentum, teardown. A mixin of the engine,
kept apart so engine.py stays the training step."""

from __future__ import annotations

import contextlib
import gc

from ..accelerator import get_accelerator
from .zero.init_context import GatheredParameters


class EngineContract:
    """Mixed into DeepSpeedEngine; uses its zero, coordinator, reducer and config."""

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        """Let the caller say whether the next backward / step ends an accumulation (Accelerate
        does, from its own counter), instead of the engine counting micro-steps."""
        self._boundary_override = bool(is_boundary)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward inside the block accumulates gradients locally, without reducing them
        across ranks. Stages 2-3 reduce as gradients appear (that is what partitions them),
        so there it is an error, as in DeepSpeed; so is step() inside the block."""
        if self.zero_optimization_stage() >= 2:
            raise RuntimeError(f"no_sync() cannot be used at ZeRO stage {self.zero_optimization_stage()}: "
                               "stages 2 and 3 reduce gradients as they are produced; drop the no_sync() block "
                               "(or use stage 0 or 1)")
        if self._inside_no_sync:
            raise RuntimeError("no_sync() blocks cannot be nested")
        self._inside_no_sync = True
        try:
            yield
        finally:
            self._inside_no_sync = False

    def get_mom(self) -> list:
        """Each param group's momentum: betas for Adam-like optimizers, momentum for SGD / RMSprop."""
        return [group.get("betas", group.get("momentum")) for group in self.optimizer.param_groups]

    def get_type(self) -> str:
        return type(self.basic_optimizer).__name__ if self.basic_optimizer is not None else ""

    def module_state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False,
                          exclude_frozen_parameters: bool = False) -> dict:
        state_dict = self.module.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        if exclude_frozen_parameters:
            for name, param in self.module.named_parameters():
                if not param.requires_grad:
                    state_dict.pop(prefix + name, None)
        return state_dict

    def zero_optimization_partition_weights(self) -> bool:
        return self.zero_optimization_stage() == 3

    def zero_gather_16bit_weights_on_model_save(self) -> bool:
        return self._config.zero_optimization.stage3_gather_16bit_weights_on_model_save

    def _zero3_consolidated_16bit_state_dict(self, exclude_frozen_parameters: bool = False) -> dict | None:
        """ZeRO-3: the whole state dict in the training dtype on rank 0 (None on the others),
        gathered one module's params at a time. Every rank must call it."""
        if self.zero_optimization_stage() != 3:
            raise ValueError("_zero3_consolidated_16bit_state_dict needs ZeRO stage 3")
        return self._gathered_state_dict(exclude_frozen_parameters)

    def _gathered_state_dict(self, exclude_frozen_parameters: bool = False) -> dict | None:
        """ZeRO-3: the whole state dict on rank 0 (None elsewhere), one module's params at a time."""
        state_dict = {} if self.global_rank == 0 else None
        for prefix, module in self.module.named_modules():
            own = {name: p for name, p in module.named_parameters(recurse=False)
                   if p.requires_grad or not exclude_frozen_parameters}
            with GatheredParameters(list(own.values())):
                if state_dict is not None:
                    state_dict.update((f"{prefix}.{name}" if prefix else name, p.detach().clone())
                                      for name, p in own.items())
        if state_dict is None:
            return None
        state_dict.update((name, b) for name, b in self.module.named_buffers())
        return {name: state_dict[name] for name in self.module.state_dict(keep_vars=True) if name in state_dict}

    def compile(self, backend: str | None = None, compile_kwargs: dict | None = None) -> None:
        """torch.compile the wrapped module's forward (DeepSpeed's signature; Accelerate calls it
        with its dynamo settings). ZeRO-3's hooks stay outside the compiled graphs."""
        options = dict(compile_kwargs or {})
        if backend is not None:
            options["backend"] = backend
        self.module.compile(**options)

    def empty_partition_cache(self) -> None:
        """ZeRO-3: release every gathered (non-persistent) param now, e.g. between training
        and a generation loop."""
        if self.coordinator is not None:
            self.coordinator.release_all()
        gc.collect()
        get_accelerator().empty_cache()

    def destroy(self) -> None:
        """Remove the engine's hooks from the model's params and modules and let go of what
        it allocated (masters, optimizer states, gradient buffers); Accelerate calls this when
        it frees an engine. The engine cannot train or save afterwards. (Dropping an engine
        without destroy() frees the same: the hooks and the params' links refer to it weakly.)"""
        reducer = self.zero.reducer if self.zero is not None else self.reducer
        for hook in reducer.hooks if reducer is not None else []:
            hook.remove()
        if self.coordinator is not None:
            self.coordinator.release_all()
            self.coordinator.remove_hooks()
        for param in self.module.parameters():
            param.__dict__.pop("_ds_link", None)
            param.__dict__.pop("ds_master_shard", None)  # stage 3: a view that keeps the fp32 masters alive
            if self.zero is not None and self.zero.stage < 3:
                param.grad = None
        self.optimizer = self.basic_optimizer = self.lr_scheduler = None
        self.zero = self.reducer = self.masters = self.coordinator = None
        self._trainable = []
        self._destroyed = True


def mark_overflow(optimizer, overflowed: bool) -> None:
    """DeepSpeed's optimizers carry `overflow` (did the last step skip on inf / NaN gradients);
    Accelerate reads it to report a skipped step."""
    if optimizer is not None:
        optimizer.overflow = overflowed


def no_optimizer_error() -> RuntimeError:
    return RuntimeError("this engine was built without an optimizer (no optimizer passed to initialize() and no "
                        "'optimizer' section): it runs forward passes only; to train, pass optimizer= to "
                        "initialize() or add an 'optimizer' section to the config")
