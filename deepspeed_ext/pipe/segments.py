"""A stage's forward cut at its layer boundaries, so that its backward can run in two halves
(the ZB-H1 schedule): backward_input() gives the gradients the previous stage waits for,
backward_weight() later the parameters' gradients.

Each layer (or checkpointed run of layers) runs on detached copies of its inputs, so its
autograd graph ends there: the input half walks the layers back to front asking only for
input gradients (autograd skips the weight-gradient products), keeping each layer's output
gradient; the weight half asks each layer's graph for its parameters' gradients from that
output gradient. Each product is the one a whole backward computes, accumulated into
.grad in the same micro-batch order. A checkpointed run recomputes and finishes its
backward (params included) in the input half: its weight half is empty.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..runtime import activation_checkpointing
from .module import PipelineModule, _run, _run_unpacked, module_of


class _Segment:
    __slots__ = ("complete", "inputs", "output_grads", "outputs", "params")

    def __init__(self, inputs, outputs, params, complete: bool) -> None:
        self.inputs = [t for t in inputs if t.requires_grad]
        self.outputs = [t for t in outputs if t.requires_grad]
        self.params, self.complete, self.output_grads = params, complete, None


class Segments:
    def __init__(self, module: PipelineModule) -> None:
        self.module = module
        self.segments: list[_Segment] = []
        self._loss_inputs = None

    def forward(self, inputs):
        module, funcs = self.module, self.module.forward_funcs
        interval = module.activation_checkpoint_interval or 1
        x = inputs
        for start in range(0, len(funcs), interval):
            chunk = funcs[start:start + interval]
            detached = _detach(x)
            checkpointed = module.activation_checkpoint_interval > 0 and module._is_checkpointable(chunk)
            if checkpointed:
                args = detached if isinstance(detached, tuple) else (detached,)
                out = module.activation_checkpoint_func(functools.partial(_run_unpacked, chunk), *args)
            else:
                out = _run(chunk, detached)
            # the re-entrant checkpoint's backward recomputes and runs a whole backward itself
            complete = checkpointed and module.activation_checkpoint_func is activation_checkpointing.checkpoint
            self._add(detached, out, _params(chunk), complete)
            x = out
        return x

    def loss_input(self, outputs):
        """Last stage: detached copies of the outputs for the loss to be computed from, so
        that the loss is a segment of its own (close() adds it)."""
        self._loss_inputs = _detach(outputs)
        return self._loss_inputs

    def close(self, scaled_loss: torch.Tensor, loss_fn) -> None:
        params = list(loss_fn.parameters()) if isinstance(loss_fn, nn.Module) else []
        self._add(self._loss_inputs, scaled_loss, params, complete=False)

    def _add(self, inputs, outputs, params, complete: bool) -> None:
        self.segments.append(_Segment(_as_list(inputs), _as_list(outputs), params, complete))

    def backward_input(self, output_grads):
        """Input gradients, layer by layer from the back; returns the stage inputs' gradients."""
        grads = output_grads
        for index in range(len(self.segments) - 1, -1, -1):
            segment = self.segments[index]
            segment.output_grads = grads
            if not segment.outputs:
                grads = [torch.zeros_like(t) for t in segment.inputs]
                continue
            if not segment.inputs:
                if segment.complete:  # a checkpointed run's backward computes its params' gradients
                    torch.autograd.backward(segment.outputs, grads)
                grads = []
                continue
            found = torch.autograd.grad(segment.outputs, segment.inputs, grads, retain_graph=not segment.complete,
                                        allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(found, segment.inputs)]
        return grads

    def backward_weight(self) -> None:
        for segment in reversed(self.segments):
            params = [p for p in segment.params if p.requires_grad]
            if segment.complete or not params or not segment.outputs:
                continue
            found = torch.autograd.grad(segment.outputs, params, segment.output_grads, allow_unused=True)
            for param, grad in zip(params, found):
                if grad is None:
                    continue
                if param.grad is None:
                    param.grad = grad
                else:
                    param.grad += grad
        self.segments = []


def _as_list(value) -> list[torch.Tensor]:
    if torch.is_tensor(value):
        return [value]
    return [t for t in value if torch.is_tensor(t)]


def _detach(value):
    if torch.is_tensor(value):
        return value.detach().requires_grad_(value.requires_grad)
    return tuple(_detach(t) if torch.is_tensor(t) else t for t in value)


def _params(funcs) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for func in funcs:
        module = module_of(func)
        if isinstance(module, nn.Module):
            for param in module.parameters():
                seen.setdefault(id(param), param)
    return list(seen.values())
