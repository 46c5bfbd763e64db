"""DeepSpeedEngine: the conductor of a training step. It owns the module and hands each job
to a small part: the config (config.py), mixed precision (precision.py), the optimizer
(optimizers.py), gradient averaging (gradients.py) and the LR schedule (lr_schedules.py).

    loss = engine(batch); engine.backward(loss); engine.step()

backward() scales the loss (fp16) and divides it by the accumulation steps; step() acts at
the accumulation boundary: average gradients across ranks, unscale and check for overflow,
clip, step the optimizer and the schedule, zero the gradients.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from pathlib import Path

import torch

from .. import comm
from ..accelerator import get_accelerator
from ..moe import checkpoint as moe_checkpoint
from ..moe import training as moe_training
from ..utils import tensor_fragment, zero_to_fp32
from ..utils.timer import device_timer
from ..version import __version__
from . import activation_checkpointing, checkpoint
from .config import PIPELINE, DeepSpeedConfig
from .config_schema import AUTO, ConfigError
from .engine_contract import EngineContract, mark_overflow, no_optimizer_error
from .gradients import OVERLAP_BUCKET_LIMIT, OverlappedAllReduce
from .lr_schedules import build_schedule
from .monitor import monitors_from
from .optimizers import build_optimizer
from .precision import LossScaler, MasterWeights, has_overflow
from .unused_params import UnusedParamCheck
from .zero import checkpointing as zero_checkpoint
from .zero.build import build_zero, partition_for_stage3


class DeepSpeedEngine(EngineContract, torch.nn.Module):
    """What deepspeed_ext.initialize returns first. Attributes it does not have fall through
    to the wrapped module. `engine.config` is the config dict, as in DeepSpeed (HF's Trainer
    reads it); `engine._config` the checked config object."""

    def __init__(self, model: torch.nn.Module, config, optimizer=None, model_parameters=None, training_data=None,
                 lr_scheduler=None, collate_fn=None, dist_init_required=None) -> None:
        super().__init__()
        comm.init_distributed(dist_init_required=dist_init_required, verbose=False)
        self.world_size, self.global_rank, self.local_rank = comm.get_world_size(), comm.get_rank(), comm.get_local_rank()
        self.device = get_accelerator().local_device()
        # the ranks that hold replicas of this model and average their gradients
        self.dp_group, self.dp_world_size, self.dp_rank = self._data_parallel(model)
        self._config = DeepSpeedConfig(config, world_size=self.dp_world_size)
        self.config = self._config.raw
        self._check_pipeline_section(model)
        self._boundary_override: bool | None = None  # set_gradient_accumulation_boundary
        self._inside_no_sync = self._destroyed = False
        self.module = model.to(self.device, dtype=self._model_dtype())
        self.moe_layers = moe_training.join_expert_groups(self.module)  # [(name, MoE layer)]
        self.has_moe_layers = bool(self.moe_layers)
        self.num_experts = [layer.num_experts for _, layer in self.moe_layers]
        groups = _param_groups(model_parameters if model_parameters is not None else self.module.parameters())
        self.zero, self.coordinator, self.masters, self.reducer = None, None, None, None
        self._trainable = []
        if optimizer is None and self._config.optimizer.type is None:
            self._setup_evaluation()
        elif self.zero_optimization_stage() > 0:
            self._setup_zero(optimizer, groups)
        else:
            self._setup_replicated(optimizer, groups)
        if self._config.raw.get("activation_checkpointing") is not None:
            activation_checkpointing.configure(None, deepspeed_config=self._config)
        mark_overflow(self.optimizer, False)
        tensor_fragment.link_params(self)
        self._unused_check = self._make_unused_check()
        self.lr_scheduler = self._make_scheduler(lr_scheduler)
        fp16 = self._config.fp16
        self.loss_scaler = LossScaler(fp16.loss_scale, fp16.initial_scale_power, fp16.loss_scale_window,
                                      fp16.hysteresis, fp16.consecutive_hysteresis, fp16.min_loss_scale) \
            if fp16.enabled else None
        self.training_dataloader = self.deepspeed_io(training_data, collate_fn) if training_data is not None else None
        self.global_steps = self.global_samples = self.micro_steps = self.skipped_steps = 0
        self._step_applied = False
        self._grad_norm: float | None = None
        self._last_print = time.perf_counter()
        # Summed on the device and read only when printed or logged: no sync per micro-step.
        self._print_loss = _LossMean()  # micro-batch losses since the last progress line
        self._step_loss = _LossMean()  # ... since the last optimizer step
        self.monitors = monitors_from(self._config, self.global_rank)
        self.timers = {"forward": 0.0, "backward": 0.0, "step": 0.0}

    # ---- construction -------------------------------------------------------------
    def _data_parallel(self, model: torch.nn.Module) -> tuple[object, int, int]:
        """(group, size, rank) of data parallelism: every rank (None: the default group)."""
        return None, self.world_size, self.global_rank

    def _check_pipeline_section(self, model: torch.nn.Module) -> None:
        """The `pipeline` section drives a PipelineModule's engine; for any other model a
        value other than its default would be ignored, so it is refused."""
        given = {key: value for key, value in (self._config.raw.get("pipeline") or {}).items()
                 if key in PIPELINE.keys and value not in (PIPELINE.keys[key].default, AUTO)}
        if given:
            raise ConfigError(f"pipeline.{next(iter(given))} applies to a deepspeed_ext.pipe.PipelineModule, and "
                              f"this model is a {type(model).__name__}: build the model as a PipelineModule, or drop "
                              "the pipeline section")

    def _setup_evaluation(self) -> None:
        """No optimizer anywhere (HF's evaluate / predict): forward only; at stage 3 the
        params are still partitioned and gathered module by module."""
        self.optimizer = self.basic_optimizer = None
        if self.zero_optimization_stage() == 3:
            self.coordinator = partition_for_stage3(self.module, self._config, self._model_dtype())

    def _setup_replicated(self, optimizer, groups) -> None:
        """Stage 0: every rank holds everything; gradients are all-reduced as backward runs."""
        trainable = list({id(p): p for group in groups for p in group["params"]}.values())
        self.masters = MasterWeights(trainable) if self._model_dtype() != torch.float32 else None
        if self.masters is not None:  # the optimizer steps the fp32 masters
            groups = [{**g, "params": self.masters.of(g["params"])} for g in groups]
        self.optimizer = self.basic_optimizer = self._make_optimizer(optimizer, groups, self.device)
        zero = self._config.zero_optimization
        if self.dp_world_size > 1:
            self.reducer = OverlappedAllReduce(trainable, self.dp_world_size,
                                               min(zero.reduce_bucket_size, OVERLAP_BUCKET_LIMIT),
                                               self._config.prescale_gradients, self._config.gradient_predivide_factor,
                                               group=self.dp_group,
                                               param_groups=moe_training.expert_reduce_groups(trainable))
        self._trainable = trainable

    def _setup_zero(self, optimizer, groups) -> None:
        """Stages 1-3: see runtime/zero/. A client optimizer object keeps its hyperparameters
        but steps the fp32 shards instead of the params it was built on."""
        if optimizer is not None and not callable(optimizer):
            if optimizer.state:
                raise ValueError("ZeRO needs a fresh optimizer: the one passed to initialize() already has state")
            groups = [g for g in _param_groups(optimizer.param_groups) if g["params"]]

            def adopt(shard_groups, device):
                optimizer.param_groups[:] = shard_groups
                return optimizer
            make = adopt
        else:
            def make(shard_groups, device):
                return self._make_optimizer(optimizer, shard_groups, device)
        domain = None
        if self.has_moe_layers:
            if self.zero_optimization_stage() == 3:
                raise ConfigError("zero_optimization.stage 3 does not shard MoE expert params (nor does DeepSpeed's); "
                                  "use stage 1 or 2 with MoE layers")
            groups = moe_training.zero_param_groups(groups)

            def domain(group):
                return moe_training.zero_domain(group, self.dp_world_size, self.dp_rank, self.dp_group)
        setup = build_zero(self.module, groups, make, self._config, self.device, self.dp_world_size, self.dp_rank,
                           self._model_dtype(), group=self.dp_group, domain=domain)
        self.zero, self.coordinator = setup.optimizer, setup.coordinator
        self.optimizer, self.basic_optimizer = self.zero, self.zero.optimizer
        self._trainable = [p for g in self.zero.groups for p in g.params]

    def _make_unused_check(self) -> UnusedParamCheck | None:
        """Every reducing backward checks which params the ranks use (unused_params.py): on one
        rank only when an unused param must be an error."""
        reducer = self.zero.reducer if self.zero is not None else self.reducer
        ignore = self._config.zero_optimization.ignore_unused_parameters
        if reducer is None or (self.dp_world_size == 1 and ignore):
            return None
        params = reducer.params if self.zero is None else [p for g in self.zero.groups for p in g.params]
        return UnusedParamCheck(self.module, params, ignore, self.dp_world_size,
                                stage3=self.zero_optimization_stage() == 3, group=self.dp_group)

    def _model_dtype(self) -> torch.dtype:
        if self._config.fp16.enabled:
            return torch.float16
        return torch.bfloat16 if self._config.bf16.enabled else torch.float32

    def _make_optimizer(self, optimizer, params, device: torch.device):
        section = self._config.optimizer
        if optimizer is not None and section.type is not None:
            raise ConfigError("an optimizer was passed to initialize() and the config has an 'optimizer' section; "
                              "give one of them")
        if callable(optimizer):  # a class or factory; an optimizer object is not callable
            return optimizer(params)
        if optimizer is not None:
            if self.masters is not None:  # the client built it on the low-precision params: step the fp32 masters
                for group in optimizer.param_groups:
                    group["params"] = self.masters.of(group["params"])
            return optimizer
        if section.type is None:
            raise ConfigError("no optimizer: pass one to initialize() or add an 'optimizer' section to the config")
        return build_optimizer(section.type, params, section.params, device)

    def _make_scheduler(self, lr_scheduler):
        section = self._config.scheduler
        if lr_scheduler is not None and section.type is not None:
            raise ConfigError("an lr_scheduler was passed to initialize() and the config has a 'scheduler' section; "
                              "give one of them")
        if self.basic_optimizer is None:  # an evaluation engine: a 'scheduler' section has nothing to schedule
            if lr_scheduler is not None:  # (HF's evaluate leaves it in the config; DeepSpeed skips it too)
                raise ConfigError("lr_scheduler was passed to initialize() without an optimizer to schedule: pass "
                                  "an optimizer too, or add an 'optimizer' section")
            return None
        if callable(lr_scheduler):  # a class or factory; a scheduler object is not callable
            return lr_scheduler(self.basic_optimizer)
        if lr_scheduler is not None or section.type is None:
            return lr_scheduler
        return build_schedule(section.type, self.basic_optimizer, section.params)

    def deepspeed_io(self, dataset, collate_fn=None) -> torch.utils.data.DataLoader:
        """A loader of micro-batches, each rank reading its own shard of the dataset."""
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=self.dp_world_size, rank=self.dp_rank) \
            if self.dp_world_size > 1 else torch.utils.data.RandomSampler(dataset)
        return torch.utils.data.DataLoader(dataset, batch_size=self._config.train_micro_batch_size_per_gpu,
                                           sampler=sampler, collate_fn=collate_fn,
                                           drop_last=self._config.dataloader_drop_last)

    # ---- the step -----------------------------------------------------------------
    def forward(self, *inputs, **kwargs):
        if self.coordinator is not None:
            self.coordinator.begin_micro_step()
        with self._autocast(), self._timed("forward"):
            return self.module(*inputs, **kwargs)

    def _autocast(self):
        """torch_autocast (the config allows bf16 only) or fp16.auto_cast around the forward."""
        if self._config.torch_autocast.enabled:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self._config.fp16.auto_cast:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def _timed(self, phase: str):
        """Adds the phase's wall time to self.timers when wall_clock_breakdown is on."""
        def add(seconds: float) -> None:
            self.timers[phase] += seconds
        return device_timer(self._config.wall_clock_breakdown, add)

    def backward(self, loss: torch.Tensor, retain_graph: bool = False, scale_wrt_gas: bool = True) -> torch.Tensor:
        """Backpropagate the loss of one micro-batch (scaled for fp16, and divided by the
        accumulation steps unless scale_wrt_gas=False, so the accumulated gradient is the
        batch mean)."""
        self._check_trainable()
        self._print_loss.add(loss)
        self._step_loss.add(loss)
        scaled = loss.float() / self.gradient_accumulation_steps() if scale_wrt_gas else loss.float()
        if self.loss_scaler is not None:
            scaled = scaled * self.loss_scaler.scale
        reducer = self.zero.reducer if self.zero is not None else self.reducer
        if reducer is not None and self.is_gradient_accumulation_boundary() and not self._inside_no_sync:
            reducer.arm()
        if self._unused_check is not None and reducer.armed:
            partly_used = self._unused_check.partly_used(loss)
            if partly_used:
                reducer.defer(partly_used)
        with self._timed("backward"):
            scaled.backward(retain_graph=retain_graph)
            if self.zero is not None and reducer.armed:
                reducer.finish()
            if self.coordinator is not None:
                self.coordinator.release_all()
        return loss

    def is_gradient_accumulation_boundary(self) -> bool:
        if self._boundary_override is not None:
            return self._boundary_override
        return (self.micro_steps + 1) % self.gradient_accumulation_steps() == 0

    def _check_alive(self) -> None:
        if self._destroyed:
            raise RuntimeError("this engine was destroyed (engine.destroy()): build a new one to train or save")

    def _check_trainable(self) -> None:
        self._check_alive()
        if self.optimizer is None:
            raise no_optimizer_error()

    def step(self) -> None:
        """Count the micro-batch; at the accumulation boundary, update the model."""
        self._check_trainable()
        if self._inside_no_sync:
            raise RuntimeError("engine.step() inside no_sync(): leave the block first, so gradients are reduced")
        if self.is_gradient_accumulation_boundary():
            with self._timed("step"):
                self._take_optimizer_step()
        self.micro_steps += 1
        self.global_samples += self.train_micro_batch_size_per_gpu() * self.dp_world_size

    def _take_optimizer_step(self) -> None:
        inverse_scale = 1.0 / self.loss_scaler.scale if self.loss_scaler else 1.0
        applied = self._update_zero(inverse_scale) if self.zero is not None else self._update_replicated(inverse_scale)
        if self.loss_scaler is not None:
            self.loss_scaler.update(not applied)
        self._step_applied = applied
        mark_overflow(self.optimizer, not applied)
        if not applied:
            self.skipped_steps += 1
        elif self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.global_steps += 1
        self._write_monitors()
        if self.global_steps % self._config.steps_per_print == 0:
            self._print_progress()

    def _update_zero(self, inverse_scale: float) -> bool:
        applied, norm = self.zero.step(inverse_scale, self._config.gradient_clipping, self.loss_scaler is not None)
        if applied:
            self._grad_norm = norm if self._config.gradient_clipping > 0 else None
        return applied

    def _update_replicated(self, inverse_scale: float) -> bool:
        if self.reducer is not None:
            self.reducer.finish()
        if self.masters is not None:
            self.masters.grads_to_masters(inverse_scale)
            stepped = self.masters.masters
        else:
            stepped = self._trainable
        overflow = self.loss_scaler is not None and self._has_overflow([p.grad for p in stepped if p.grad is not None])
        if not overflow:
            self._grad_norm = self._clip(stepped)
            self.optimizer.step()
            if self.masters is not None:
                self.masters.masters_to_model()
        for param in self._trainable + (self.masters.masters if self.masters else []):
            param.grad = None
        return not overflow

    def _write_monitors(self) -> None:
        loss = self._step_loss.take()
        if not self.monitors:
            return
        loss = float(loss)
        samples = self.global_samples + self.train_micro_batch_size_per_gpu() * self.dp_world_size
        events = [("Train/Samples/train_loss", loss, samples), ("Train/Samples/lr", self.get_lr()[0], samples)]
        if self.loss_scaler is not None:
            events.append(("Train/Samples/loss_scale", self.loss_scaler.scale, samples))
        if self.has_moe_layers:
            events.append(("Train/Samples/moe_aux_loss", moe_training.aux_loss(self.moe_layers), samples))
        for monitor in self.monitors:
            monitor.write(events)

    def _has_overflow(self, grads: list[torch.Tensor]) -> bool:
        """Stage 0: every rank holds the same averaged gradients, so each decides alone (with
        MoE layers the experts differ across ranks, so they agree)."""
        overflow = has_overflow(grads)
        return moe_training.overflow_anywhere(overflow, self.device) if self.has_moe_layers else overflow

    def _clip(self, params) -> float | None:
        """Clip to gradient_clipping and return the global norm before clipping; without
        clipping the norm is not computed (a full pass over the gradients), as in DeepSpeed."""
        with_grads = [p for p in params if p.grad is not None]
        if self._config.gradient_clipping <= 0 or not with_grads:
            return None
        if self.has_moe_layers:  # the norm over every expert, not this rank's only
            return moe_training.clip_grads(params, self._config.gradient_clipping)
        return float(torch.nn.utils.clip_grad_norm_(with_grads, self._config.gradient_clipping))

    def _print_progress(self) -> None:
        now = time.perf_counter()
        samples = self._config.train_batch_size * self._config.steps_per_print
        loss = float(self._print_loss.take())
        memory = self.memory_breakdown() if self._config.memory_breakdown else None  # every rank: stage 3 reads shards
        if self.global_rank == 0:
            scale = f", loss scale {self.loss_scaler.scale:g}" if self.loss_scaler else ""
            if self.has_moe_layers:
                scale += f", moe aux loss {moe_training.aux_loss(self.moe_layers):.4f}"
            print(f"[deepspeed_ext] step {self.global_steps}: loss {loss:.4f}, lr {self.get_lr()}{scale}, "
                  f"{samples / (now - self._last_print):.1f} samples/s, skipped {self.skipped_steps}")
            if memory is not None:
                print("[deepspeed_ext] memory (MB) | " + " | ".join(
                    f"{part}: {count / 2**20:.1f}" for part, count in memory.items()) +
                    f" | process RSS: {_resident_bytes() / 2**20:.1f}")
            if self._config.wall_clock_breakdown:
                print("[deepspeed_ext] time (ms) | " + " | ".join(
                    f"{phase}: {seconds * 1e3 / self._config.steps_per_print:.2f}" for phase, seconds in self.timers.items()))
        self.timers = dict.fromkeys(self.timers, 0.0)
        self._last_print = now

    # ---- checkpoints ----------------------------------------------------------------
    _RESERVED_KEYS = frozenset({"module", "optimizer", "lr_scheduler", "fp32_master_weights", "loss_scaler",
                                "global_steps", "global_samples", "micro_steps", "skipped_steps", "ds_config",
                                "ds_version", "param_shapes", "shared_params", "buffer_names", "frozen_param_shapes",
                                "frozen_param_fragments", "frozen_pieces", "num_experts", "moe_ep_sizes"})

    def save_checkpoint(self, save_dir: str | os.PathLike, tag=None, client_state: dict | None = None,
                        save_latest: bool = True) -> bool:
        """Save everything a resumed run needs (see runtime/checkpoint.py for the layout);
        the client_state keys are stored beside the engine's and returned by load_checkpoint."""
        self._check_alive()
        zero = self.zero
        states = {"module": self.module.state_dict() if zero is None or zero.stage < 3 else None,
                  **self._training_states(client_state or {})}
        tag = str(tag) if tag is not None else f"global_step{self.global_steps}"
        tag = checkpoint.agreed_tag(save_dir, tag, self._config.checkpoint.tag_validation)
        shared = self._writes_shared_files()
        moe_files = self._moe_checkpoint_files(states) if self.has_moe_layers else {}
        if zero is None:
            files = {checkpoint.MODEL_STATES: states} if shared else {}
            checkpoint.save(save_dir, tag, {**files, **moe_files}, self.global_rank, save_latest, shared)
        else:
            states.update(zero_checkpoint.model_metadata(self.module, zero, self.global_rank))
            with zero.resident():  # NVMe offload: masters and states back from their files until written
                files = {zero_checkpoint.optim_file(self.global_rank, self.bfloat16_enabled()): {
                    "optimizer_state_dict": zero_checkpoint.optimizer_state(zero), "ds_config": self._config.raw,
                    "ds_version": __version__}}
                if zero.stage == 3 or shared:
                    files[zero_checkpoint.model_file(self.global_rank, zero.stage)] = states
                checkpoint.save(save_dir, tag, {**files, **moe_files}, self.global_rank, save_latest, shared)
        if zero is not None and shared:  # as DeepSpeed: the converter beside the checkpoints
            shutil.copyfile(zero_to_fp32.__file__, Path(save_dir) / "zero_to_fp32.py")
        return True

    def _moe_checkpoint_files(self, states: dict) -> dict[str, dict]:
        """MoE: expert weights leave the model states for their own files (moe/checkpoint.py), and
        so, at stage 0, does the optimizer (its expert states differ across expert-parallel ranks)."""
        if states["module"] is not None:
            states["module"] = moe_checkpoint.shared_state(states["module"], self.moe_layers)
        states["num_experts"], states["moe_ep_sizes"] = self.num_experts, moe_checkpoint.layout(self.moe_layers)
        files = moe_checkpoint.expert_files(self.moe_layers)
        if self.zero is None and self.optimizer is not None:
            if moe_checkpoint.writes_optimizer():
                files[moe_checkpoint.optimizer_file(moe_checkpoint.optimizer_rank())] = {"optimizer": states["optimizer"]}
            states["optimizer"] = None
        return files

    def _training_states(self, client_state: dict) -> dict:
        """What a checkpoint holds besides the weights: optimizer (stage 0), fp32 masters,
        schedule, loss scale, counters, config, and the client's own keys."""
        clashing = sorted(self._RESERVED_KEYS & set(client_state))
        if clashing:
            raise ValueError(f"client_state keys {clashing} clash with the engine's own checkpoint keys")
        return {
            "optimizer": self.optimizer.state_dict() if self.zero is None and self.optimizer is not None else None,
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "fp32_master_weights": [m.detach() for m in self.masters.masters] if self.masters else None,
            "loss_scaler": self.loss_scaler.state_dict() if self.loss_scaler else None,
            "global_steps": self.global_steps, "global_samples": self.global_samples,
            "micro_steps": self.micro_steps, "skipped_steps": self.skipped_steps,
            "ds_config": self._config.raw, "ds_version": __version__,
            **client_state,
        }

    def _writes_shared_files(self) -> bool:
        """Global rank 0 writes the files all ranks share (and `latest`); with
        checkpoint.use_node_local_storage, every node's local rank 0 does, on its own disk."""
        if self._config.checkpoint.use_node_local_storage:
            return self.local_rank == 0
        return self.global_rank == 0

    def load_checkpoint(self, load_dir: str | os.PathLike, tag=None, load_module_strict: bool = True,
                        load_optimizer_states: bool = True, load_lr_scheduler_states: bool = True,
                        load_module_only: bool = False):
        """Load a checkpoint (the `latest` one unless tag is given): returns (its path, the
        client_state saved with it), or (None, None) with a warning when there is none."""
        self._check_alive()
        folder = checkpoint.resolve(load_dir, tag)
        if folder is None:
            return None, None
        zero = self.zero
        model_file = checkpoint.MODEL_STATES if zero is None else zero_checkpoint.model_states_file(folder, zero.stage)
        states, rng = checkpoint.load_states(folder, self.global_rank, model_file)
        if self.has_moe_layers:
            load_module_only = self._load_moe_parts(folder, states, load_optimizer_states and not load_module_only) \
                or load_module_only
        if zero is None:
            self.module.load_state_dict(states["module"], strict=load_module_strict)
        else:
            zero_checkpoint.restore_module(self.module, zero, folder, states, load_module_strict)
        if zero is not None:
            if load_module_only and zero.stage < 3:
                zero.refresh_masters_from_model()
            else:
                with zero.resident():
                    zero_checkpoint.load_optimizer_state(zero, folder, self.bfloat16_enabled(),
                                                         load_optimizer_states and not load_module_only)
                zero.publish()
        self._restore_masters(states.get("fp32_master_weights") if not load_module_only else None)
        if not load_module_only:
            self._restore_training_states(states, rng, load_optimizer_states and zero is None, load_lr_scheduler_states)
        return str(folder), {k: v for k, v in states.items() if k not in self._RESERVED_KEYS}

    def _load_moe_parts(self, folder: Path, states: dict, optimizer_states: bool) -> bool:
        """Put the local experts' weights (from their files) into the module state and, at stage
        0, the optimizer from its file. Returns whether only the module can load: the
        checkpoint's ep_size differs, so its optimizer states belong to other experts."""
        states["module"] = moe_checkpoint.with_experts(folder, states["module"], self.moe_layers)
        saved, current = states.get("moe_ep_sizes"), moe_checkpoint.layout(self.moe_layers)
        if saved is not None and saved != current:
            if optimizer_states:
                raise ValueError(f"load_checkpoint: {folder} was saved with MoE ep_size {saved}, this model has "
                                 f"{current}: its optimizer states belong to other experts. Pass "
                                 "load_optimizer_states=False (or load_module_only=True) to load the weights only")
            return True
        if self.zero is None and optimizer_states:
            path = folder / moe_checkpoint.optimizer_file(moe_checkpoint.optimizer_rank())
            states["optimizer"] = torch.load(path, map_location="cpu", weights_only=False)["optimizer"]
        return False

    def _restore_masters(self, saved_masters: list[torch.Tensor] | None) -> None:
        """Stage 0 with bf16 / fp16: the fp32 masters from the checkpoint, else from the
        (just loaded) model weights."""
        if self.masters is None:
            return
        with torch.no_grad():
            for index, (param, master) in enumerate(zip(self.masters.model_params, self.masters.masters)):
                master.copy_(saved_masters[index] if saved_masters else param)

    def _restore_training_states(self, states: dict, rng: dict | None, load_optimizer_states: bool,
                                 load_lr_scheduler_states: bool) -> None:
        if load_optimizer_states:
            self.optimizer.load_state_dict(states["optimizer"])
        if load_lr_scheduler_states and self.lr_scheduler is not None and states["lr_scheduler"] is not None:
            self.lr_scheduler.load_state_dict(states["lr_scheduler"])
        if self.loss_scaler is not None and states["loss_scaler"] is not None:
            self.loss_scaler.load_state_dict(states["loss_scaler"])
        for counter in ("global_steps", "global_samples", "micro_steps", "skipped_steps"):
            setattr(self, counter, states[counter])
        if rng is not None:
            checkpoint.restore_rng_states(rng)

    def save_16bit_model(self, save_dir: str | os.PathLike, save_filename: str = "pytorch_model.bin") -> bool:
        """Save the module's weights in the dtype it trains in (fp16 / bf16, or fp32). Under
        ZeRO-3 the weights are gathered first, which needs
        stage3_gather_16bit_weights_on_model_save (else nothing is saved and False returned)."""
        if self.zero is not None and self.zero.stage == 3:
            if not self._config.zero_optimization.stage3_gather_16bit_weights_on_model_save:
                warnings.warn("save_16bit_model did not save: under ZeRO-3 it needs zero_optimization."
                              "stage3_gather_16bit_weights_on_model_save: true", stacklevel=2)
                return False
            state_dict = self._gathered_state_dict()
        else:
            state_dict = self.module.state_dict() if self.global_rank == 0 else None
        if self.global_rank == 0:
            os.makedirs(save_dir, exist_ok=True)
            checkpoint.atomic_torch_save(state_dict, Path(save_dir) / save_filename)
        return True

    def memory_breakdown(self) -> dict[str, int]:
        """Bytes of model states this rank holds in memory right now: params (whole, or shards
        and whatever is gathered), gradients, fp32 master weights and optimizer states; with
        NVMe offload also the bytes in its swap files (`swapped_to_nvme`, not in the total)."""
        params = {id(p): p for p in self.module.parameters()}.values()
        param_bytes = sum(p.numel() * p.element_size() for p in params)
        grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
        if self.zero is None:
            masters = self.masters.masters if self.masters else []
            states = self.optimizer.state.values() if self.optimizer is not None else []
            breakdown = {"master_weights": sum(m.numel() * m.element_size() for m in masters),
                         "optimizer_states": sum(t.numel() * t.element_size() for s in states
                                                 for t in s.values() if torch.is_tensor(t) and t.dim() > 0)}
            if self.coordinator is not None:  # an evaluation engine at stage 3 holds shards
                param_bytes += sum(p.ds_tensor.numel() * p.ds_tensor.element_size() for p in params)
        else:
            breakdown = self.zero.model_state_bytes()
            grad_bytes += breakdown.pop("gradient_shards")
            if self.zero.stage == 3:
                param_bytes += sum(g.lp_shard.numel() * g.lp_shard.element_size() for g in self.zero.groups
                                   if not g.lp_shard.is_meta)  # meta: on NVMe
        breakdown = {"params": param_bytes, "gradients": grad_bytes, **breakdown}
        in_memory = sum(count for part, count in breakdown.items() if part != "swapped_to_nvme")
        return {**breakdown, "total": in_memory}

    # ---- what DeepSpeed users query -------------------------------------------------
    def train_batch_size(self) -> int:
        return self._config.train_batch_size

    def train_micro_batch_size_per_gpu(self) -> int:
        return self._config.train_micro_batch_size_per_gpu

    def gradient_accumulation_steps(self) -> int:
        return self._config.gradient_accumulation_steps

    def zero_optimization_stage(self) -> int:
        return self._config.zero_optimization.stage

    def fp16_enabled(self) -> bool:
        return self._config.fp16.enabled

    def bfloat16_enabled(self) -> bool:
        return self._config.bf16.enabled

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups] if self.optimizer is not None else []

    def get_global_grad_norm(self) -> float | None:
        """The gradient norm of the last step (None unless gradient_clipping is set)."""
        return self._grad_norm

    def was_step_applied(self) -> bool:
        return self._step_applied

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = super().__getattr__("module")
            if hasattr(module, name):
                return getattr(module, name)
            raise AttributeError(f"neither DeepSpeedEngine nor the wrapped {type(module).__name__} has '{name}'") \
                from None


class _LossMean:
    """A running mean of losses kept as a device tensor until someone reads it."""

    def __init__(self) -> None:
        self.total, self.count = None, 0

    def add(self, loss: torch.Tensor) -> None:
        value = loss.detach().float()
        self.total = value if self.total is None else self.total + value
        self.count += 1

    def take(self) -> torch.Tensor:
        """The mean since the last take (0 if nothing was added), resetting the sum."""
        mean = self.total / self.count if self.count else torch.zeros(())
        self.total, self.count = None, 0
        return mean


def _resident_bytes() -> int:
    """This process's resident memory (Linux /proc; its peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _param_groups(model_parameters) -> list[dict]:
    """model_parameters (tensors or param-group dicts) as groups of trainable params."""
    items = list(model_parameters)
    groups = items if items and isinstance(items[0], dict) else [{"params": items}]
    return [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
