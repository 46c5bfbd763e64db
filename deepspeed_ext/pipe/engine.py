"""PipelineEngine: what deepspeed_ext.initialize returns for a PipelineModule (DeepSpeed's
deepspeed.runtime.pipe.engine.PipelineEngine). One call trains one batch:

    engine, _, _, _ = deepspeed_ext.initialize(model=pipeline_module, config=ds_config)
    loss = engine.train_batch(data_iter)      # gradient_accumulation_steps micro-batches

The schedule (schedule.py) says what this stage does, in order; the engine carries it out:
micro-batches in from the data iterator (first stage: inputs, last stage: labels) or from
the previous stage, activations and gradients over p2p.py, then the batch's agreement (loss,
and whether any rank failed), tied-weight and data-parallel gradient reductions and the
optimizer step of DeepSpeedEngine. Only train_batch / eval_batch drive it: forward(),
backward() and step() raise, as in DeepSpeed.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import torch
import torch.distributed as dist

from ..runtime import activation_checkpointing
from ..runtime.config_schema import ConfigError
from ..runtime.engine import DeepSpeedEngine
from ..runtime.nested import map_tensors
from . import p2p
from . import schedule as plan
from .checkpoint_io import PipelineCheckpoints
from .module import PipelineModule
from .segments import Segments

SCHEDULE_CLASSES = {"1f1b": plan.TrainSchedule, "zb_h1": plan.ZeroBubbleSchedule}
FINISH = (plan.ReduceTiedGrads, plan.ReduceGrads, plan.OptimizerStep)


class PipelineError(RuntimeError):
    """A pipeline batch failed on some rank; raised on every rank of the job."""


class _MicroBatch:
    """What one stage holds for one micro-batch between its passes."""

    __slots__ = ("input_grads", "inputs", "labels", "loss", "output_grads", "outputs", "scaled", "segments")

    def __init__(self) -> None:
        self.inputs = self.labels = self.outputs = self.loss = self.scaled = None
        self.input_grads = self.output_grads = self.segments = None


class PipelineEngine(PipelineCheckpoints, DeepSpeedEngine):
    def __init__(self, model: PipelineModule, config, **kwargs) -> None:
        if not isinstance(model, PipelineModule):
            raise TypeError(f"PipelineEngine needs a PipelineModule, got {type(model).__name__}")
        super().__init__(model, config, **kwargs)
        self.grid = model.mpu()
        self.stage_id, self.num_stages = self.grid.get_stage_id(), model.num_stages
        self.micro_batches = self.gradient_accumulation_steps()
        section = self._config.pipeline
        if section.stages is not None and section.stages != self.num_stages:
            raise ConfigError(f"pipeline.stages is {section.stages} but the PipelineModule has {self.num_stages} "
                              "stages: make them agree (or leave pipeline.stages 'auto')")
        if self.zero_optimization_stage() > 1:
            raise ConfigError(f"zero_optimization.stage {self.zero_optimization_stage()} cannot be used with a "
                              "pipeline: stages 2 and 3 reduce gradients during each backward, a pipeline reduces "
                              "them once per batch (use stage 0 or 1, as DeepSpeed)")
        if self.zero is not None and self.zero.reducer.every_micro_step:  # fp32 sums into the shards
            raise ConfigError("data_types.grad_accum_dtype: fp32 accumulation is not supported with a pipeline "
                              "(gradients accumulate in the model's dtype until the batch's reduction)")
        if section.activation_checkpoint_interval > 0:
            model.set_checkpoint_interval(section.activation_checkpoint_interval)
        if not section.use_reentrant:
            model.activation_checkpoint_func = activation_checkpointing.non_reentrant_checkpoint
        self.schedule_name = section.schedule
        # where tensors handed to torch.distributed live: NCCL's on the GPU, gloo's on the CPU
        self.comm_device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        self.transfers = p2p.Transfers(self.device, self.comm_device, early_receives=dist.get_backend() == "gloo")
        self.prev_rank = self.grid.stage_to_global(self.stage_id - 1) if self.stage_id > 0 else None
        self.next_rank = self.grid.stage_to_global(self.stage_id + 1) if self.stage_id < self.num_stages - 1 \
            else None
        self.data_iterator, self.batch_fn = None, None
        if self.training_dataloader is not None:
            self.set_dataloader(self.training_dataloader)
        self.peak_micro_batches_held = 0  # the most micro-batches one batch held at once on this stage
        self._failure: str | None = None
        self.agg_train_loss = None

    def _check_pipeline_section(self, model) -> None:
        """The section is this engine's own (read in __init__)."""

    def _data_parallel(self, model) -> tuple[object, int, int]:
        grid = model.mpu()
        return grid.get_data_parallel_group(), grid.get_data_parallel_world_size(), grid.get_data_parallel_rank()

    # ---- what DeepSpeed users query --------------------------------------------------
    def is_first_stage(self) -> bool:
        return self.stage_id == 0

    def is_last_stage(self) -> bool:
        return self.stage_id == self.num_stages - 1

    def set_dataloader(self, loader) -> None:
        """Read micro-batches from `loader`, round after round (first and last stages)."""
        if self.is_first_stage() or self.is_last_stage():
            self.data_iterator = _repeat(loader)

    def set_dataiterator(self, iterator) -> None:
        if self.is_first_stage() or self.is_last_stage():
            self.data_iterator = iterator

    def set_batch_fn(self, fn) -> None:
        """Apply fn to each batch read from the data iterator (before it is split into inputs and labels)."""
        self.batch_fn = fn

    def reset_activation_shape(self) -> None:
        """Forget the remembered layouts of transfers (call it on every rank, between batches).
        Never needed: a new layout is noticed and renegotiated by itself."""
        self.transfers.sent.clear()
        self.transfers.received.clear()

    def forward(self, *args, **kwargs):
        raise RuntimeError("a PipelineEngine runs whole batches: call engine.train_batch() or engine.eval_batch()")

    def backward(self, *args, **kwargs):
        raise RuntimeError("a PipelineEngine runs whole batches: call engine.train_batch(), which runs backward")

    def step(self, *args, **kwargs):
        raise RuntimeError("a PipelineEngine runs whole batches: call engine.train_batch(), which steps")

    # ---- batches ------------------------------------------------------------------------
    def train_batch(self, data_iter=None) -> torch.Tensor:
        """Train on gradient_accumulation_steps micro-batches; returns the batch's mean loss
        (averaged over data-parallel ranks), on every rank."""
        self._check_trainable()
        if data_iter is not None:
            self.set_dataiterator(data_iter)
        self.module.train()
        schedule = SCHEDULE_CLASSES[self.schedule_name](self.micro_batches, self.num_stages, self.stage_id)
        self._run(schedule, compute_loss=True, train=True)
        self.micro_steps += self.micro_batches
        self.global_samples += self.train_batch_size()
        return self.agg_train_loss

    def eval_batch(self, data_iter, return_logits: bool = False, compute_loss: bool = True,
                   reduce_output: str | None = "avg", bcast_loss: bool = True, num_micro_batches: int | None = None):
        """Forward gradient_accumulation_steps (or num_micro_batches) micro-batches without
        gradients. With compute_loss, the loss: averaged over micro-batches and data-parallel
        ranks (reduce_output "avg"), or one per micro-batch (None), on every rank. Without
        it, the last stage's outputs (None elsewhere). return_logits adds the last stage's
        outputs, concatenated over micro-batches (None on other stages). bcast_loss is
        DeepSpeed's switch for sending the loss to every stage: here the batch's agreement
        carries it to every rank either way."""
        self._check_alive()
        if reduce_output not in ("avg", None):
            raise ValueError(f"eval_batch: reduce_output must be 'avg' or None, got {reduce_output!r}")
        self.set_dataiterator(data_iter)
        self.module.eval()
        micro_batches = num_micro_batches or self.micro_batches
        schedule = plan.InferenceSchedule(micro_batches, self.num_stages, self.stage_id)
        with torch.no_grad():
            losses = self._run(schedule, compute_loss=compute_loss, train=False)
        outputs = None
        if self.is_last_stage():
            outputs = [held.outputs for held in self._held_outputs]
            outputs = _concatenate(outputs)
        self._held_outputs = []
        if compute_loss:
            result = losses.mean() if reduce_output == "avg" else list(losses)
        else:
            result = outputs
        return (result, outputs) if return_logits else result

    def _run(self, schedule, compute_loss: bool, train: bool) -> torch.Tensor | None:
        """Carry out one schedule; returns the micro-batch losses (data-parallel mean) on
        every rank, or None without compute_loss."""
        if self._failure is not None:
            raise PipelineError(f"an earlier batch failed ({self._failure}); messages it left between the stages "
                                "would be read as this batch's: build a new engine")
        self._compute_loss, self._train = compute_loss, train
        self._held: dict[int, _MicroBatch] = {}
        self._held_outputs: list[_MicroBatch] = []
        self._losses: dict[int, torch.Tensor] = {}
        self._peak = 0
        steps = list(schedule.steps())
        receives = ((self.prev_rank, plan.RecvActivation), (self.next_rank, plan.RecvGrad))
        self.transfers.expect({peer: sum(isinstance(i, kind) for step in steps for i in step)
                               for peer, kind in receives if peer is not None})
        failure, finishing = None, []
        try:
            for step in steps:
                if isinstance(step[0], FINISH):
                    finishing = step
                    break
                self._execute(step)
        except p2p.PeerFailed as peer:
            failure = (peer.rank, None)
        except Exception as error:  # noqa: BLE001 - every failure must reach every rank (else they hang)
            failure = (self.global_rank, error)
        if failure is not None:
            self.transfers.fail([r for r in (self.prev_rank, self.next_rank) if r is not None], failure[0])
        losses = self._agree(schedule.micro_batches, failure)
        if train:  # before the optimizer step, which reports it
            self.agg_train_loss = losses.mean()
        self.transfers.flush()
        self.peak_micro_batches_held = self._peak
        for instruction in finishing:
            self._execute([instruction])
        return losses

    def _agree(self, micro_batches: int, failure) -> torch.Tensor | None:
        """One all-reduce over every rank: whether any failed, and the last stages' losses.
        On a failure every rank learns which rank failed and why, and raises."""
        count = micro_batches if self._compute_loss else 0
        totals = torch.zeros(1 + count, dtype=torch.float64, device=self.comm_device)
        totals[0] = 1.0 if failure is not None else 0.0
        if failure is None and count and self.is_last_stage():
            totals[1:] = torch.stack([self._losses[j].double() for j in range(count)]).to(totals.device)
        dist.all_reduce(totals)
        if totals[0] > 0:
            self._raise_failure(failure)
        return (totals[1:] / self.dp_world_size).float().to(self.device) if count else None

    def _raise_failure(self, failure) -> None:
        own = None if failure is None or failure[1] is None else f"{type(failure[1]).__name__}: {failure[1]}"
        reports = [None] * self.world_size
        dist.all_gather_object(reports, (self.global_rank, self.stage_id, own))
        first = next(((rank, stage, message) for rank, stage, message in reports if message is not None), None)
        where = f"rank {first[0]} (stage {first[1]})" if first else "a rank"
        self._failure = f"{where}: {first[2]}" if first else where
        error = PipelineError(f"pipeline batch failed on {where}: {first[2] if first else 'unknown error'}")
        if failure is not None and failure[1] is not None:
            raise error from failure[1]
        raise error

    # ---- instructions -------------------------------------------------------------------
    def _execute(self, step) -> None:
        """A step's instructions in order; consecutive transfers are posted together."""
        index = 0
        while index < len(step):
            instruction = step[index]
            if isinstance(instruction, plan.COMMUNICATION):
                transfers = list(itertools.takewhile(lambda i: isinstance(i, plan.COMMUNICATION), step[index:]))
                self._communicate(transfers)
                index += len(transfers)
                continue
            self._HANDLERS[type(instruction)](self, instruction)
            index += 1

    def _communicate(self, transfers) -> None:
        sends, receives = [], []
        for instruction in transfers:
            held = self._micro(instruction.micro_batch)
            if isinstance(instruction, plan.SendActivation):
                sends.append((self.next_rank, _tensors(held.outputs)))
                if not self._train:
                    held.outputs = None
            elif isinstance(instruction, plan.SendGrad):
                sends.append((self.prev_rank, held.input_grads))
                held.input_grads = None
            else:
                receives.append(instruction)
                continue
            self._drop_if_done(instruction.micro_batch)
        peers = [self.prev_rank if isinstance(i, plan.RecvActivation) else self.next_rank for i in receives]
        received = self.transfers.exchange(sends, peers)
        for instruction, tensors in zip(receives, received):
            held = self._micro(instruction.micro_batch)
            if isinstance(instruction, plan.RecvActivation):
                held.inputs = tensors[0] if len(tensors) == 1 else tuple(tensors)
            else:
                held.output_grads = tensors

    def _micro(self, micro_batch: int) -> _MicroBatch:
        if micro_batch not in self._held:
            self._held[micro_batch] = _MicroBatch()
            self._peak = max(self._peak, len(self._held))
        return self._held[micro_batch]

    def _load_micro_batch(self, instruction: plan.LoadMicroBatch) -> None:
        if self.data_iterator is None:
            raise ValueError(f"pipeline stage {self.stage_id} reads micro-batches (the first stage its inputs, the "
                             "last its labels) but has no data: pass data_iter to train_batch / eval_batch, or "
                             "training_data to initialize()")
        try:
            batch = next(self.data_iterator)
        except StopIteration:
            raise ValueError(f"the data iterator ran out at micro-batch {instruction.micro_batch} of "
                             f"{self.micro_batches}: give an iterator with a batch per micro-batch") from None
        if self.batch_fn is not None:
            batch = self.batch_fn(batch)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError("each micro-batch from the data iterator must be (inputs, labels), got "
                             f"{type(batch).__name__}{'' if not isinstance(batch, (tuple, list)) else len(batch)}")
        held = self._micro(instruction.micro_batch)
        if self.is_first_stage():
            held.inputs = map_tensors(lambda t: t.to(self.device), batch[0])
        if self.is_last_stage():
            held.labels = map_tensors(lambda t: t.to(self.device), batch[1])

    def _forward_pass(self, instruction: plan.ForwardPass) -> None:
        held = self._micro(instruction.micro_batch)
        if held.inputs is None:
            raise RuntimeError(f"stage {self.stage_id}: micro-batch {instruction.micro_batch} has no inputs")
        segmented = self._train and self.schedule_name == "zb_h1"
        with self._autocast():
            if segmented:
                held.segments = Segments(self.module)
                held.outputs = held.segments.forward(held.inputs)
            else:
                held.outputs = self.module(held.inputs)
            if self.is_last_stage() and self._compute_loss:
                loss_input = held.segments.loss_input(held.outputs) if segmented else held.outputs
                held.loss = self._loss(loss_input, held.labels, instruction.micro_batch)
        if self._train and self.is_last_stage():
            held.scaled = held.loss.float() / self.micro_batches
            if self.loss_scaler is not None:
                held.scaled = held.scaled * self.loss_scaler.scale
            if segmented:
                held.segments.close(held.scaled, self.module.loss_fn)
        held.labels = None
        if not self._train:  # no backward: the inputs can go now, the outputs once sent
            held.inputs = None
            if self.is_last_stage():
                self._held_outputs.append(self._held.pop(instruction.micro_batch))

    def _loss(self, outputs, labels, micro_batch: int) -> torch.Tensor:
        loss_fn = self.module.loss_fn
        loss = loss_fn(outputs, labels) if loss_fn is not None else outputs
        if not (torch.is_tensor(loss) and loss.numel() == 1 and loss.is_floating_point()):
            what = "loss_fn returned" if loss_fn is not None else "without a loss_fn, the last stage's output is"
            shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
            raise ValueError(f"{what} {shape}, not a scalar loss: give PipelineModule a loss_fn(outputs, labels) "
                             "that returns one")
        self._losses[micro_batch] = loss.detach().float().reshape(())
        return loss

    def _backward_pass(self, instruction) -> None:
        """BackwardPass, or BackwardInput (the weight half follows in _backward_weight)."""
        held = self._micro(instruction.micro_batch)
        if held.segments is not None:
            held.input_grads = held.segments.backward_input(None if self.is_last_stage() else held.output_grads)
        else:
            inputs = [t for t in _tensors(held.inputs) if t.requires_grad]
            if self.is_last_stage():
                held.scaled.backward()
            else:
                outputs = [t for t in _tensors(held.outputs) if t.requires_grad]
                if len(outputs) != len(held.output_grads):
                    raise RuntimeError(f"stage {self.stage_id} has {len(outputs)} outputs that need a gradient, "
                                       f"stage {self.stage_id + 1} sent {len(held.output_grads)}")
                torch.autograd.backward(outputs, held.output_grads)
            held.input_grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in inputs]
        held.inputs = held.outputs = held.output_grads = held.scaled = None
        if self.is_first_stage():
            held.input_grads = None  # nobody to send them to
        self._drop_if_done(instruction.micro_batch)

    def _backward_weight(self, instruction: plan.BackwardWeight) -> None:
        held = self._micro(instruction.micro_batch)
        held.segments.backward_weight()
        held.segments = None
        self._drop_if_done(instruction.micro_batch)

    def _drop_if_done(self, micro_batch: int) -> None:
        """Forget a micro-batch once nothing of it is left to compute or send."""
        held = self._held[micro_batch]
        if held.outputs is None and held.input_grads is None and held.segments is None:
            del self._held[micro_batch]

    def _reduce_tied_grads(self, instruction) -> None:
        self.module.allreduce_tied_weight_gradients()

    def _reduce_grads(self, instruction) -> None:
        # ZeRO-1 reduces into the shards here; stage 0's reducer runs at the start of the step
        # (DeepSpeedEngine._update_replicated), so the gradients are averaged once.
        if self.zero is not None:
            self.zero.reducer.finish()

    def _optimizer_step(self, instruction) -> None:
        for mean in (self._print_loss, self._step_loss):  # what the progress line and monitors report
            mean.add(self.agg_train_loss)
        self._take_optimizer_step()

    _HANDLERS: ClassVar[dict] = {
        plan.LoadMicroBatch: _load_micro_batch, plan.ForwardPass: _forward_pass, plan.BackwardPass: _backward_pass,
        plan.BackwardInput: _backward_pass, plan.BackwardWeight: _backward_weight,
        plan.ReduceTiedGrads: _reduce_tied_grads, plan.ReduceGrads: _reduce_grads, plan.OptimizerStep: _optimizer_step}

    # ---- agreement across stages ------------------------------------------------------------
    def _has_overflow(self, grads: list[torch.Tensor]) -> bool:
        """An overflow on any stage skips the step on every stage."""
        flag = torch.tensor([float(super()._has_overflow(grads))], device=self.comm_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _clip(self, params) -> float | None:
        """Clip by the norm over the whole pipeline: every stage's gradients (the data-parallel
        replicas hold the same ones), a tied weight's copies counted once."""
        if self._config.gradient_clipping <= 0:
            return None
        replicated = {id(m) for p, m in zip(self.masters.model_params, self.masters.masters)
                      if getattr(p, "ds_pipe_replicated", False)} if self.masters is not None else set()
        grads = [p.grad for p in params if p.grad is not None and id(p) not in replicated
                 and not getattr(p, "ds_pipe_replicated", False)]
        squares = torch.zeros((), dtype=torch.float32, device=self.device)
        for grad in grads:
            squares += torch.linalg.vector_norm(grad.float()) ** 2
        squares = squares.to(self.comm_device)
        dist.all_reduce(squares, group=self.grid.get_pipe_parallel_group())
        norm = float(squares.sqrt())
        factor = self._config.gradient_clipping / (norm + 1e-6)
        if factor < 1.0:
            torch._foreach_mul_([p.grad for p in params if p.grad is not None], factor)
        return norm


def _repeat(loader):
    """The loader's batches, epoch after epoch (DeepSpeed's RepeatingLoader)."""
    while True:
        yield from loader


def _tensors(value) -> list[torch.Tensor]:
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (tuple, list)) and all(torch.is_tensor(t) for t in value):
        return list(value)
    raise TypeError(f"a pipeline stage passes a tensor or a tuple of tensors to the next, got "
                    f"{type(value).__name__}" + (f" of {[type(t).__name__ for t in value]}"
                                                 if isinstance(value, (tuple, list)) else ""))


def _concatenate(outputs: list):
    if not outputs:
        return None
    if torch.is_tensor(outputs[0]):
        return torch.cat(outputs)
    return tuple(torch.cat(parts) for parts in zip(*outputs))

