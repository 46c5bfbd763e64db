"""What the installed Transformers and Accelerate call on DeepSpeed, read from their own source,
resolved against the `deepspeed` compat package and deepspeed_ext's engine; then the calls
Accelerate's DeepSpeed wrappers make, replayed in one process. A new upstream call fails here,
by name, before a training job does."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils.deepspeed import (
    DeepSpeedEngineWrapper,
    DeepSpeedOptimizerWrapper,
    DeepSpeedSchedulerWrapper,
    map_pytorch_optim_to_deepspeed,
)

import deepspeed_ext
from deepspeed_ext.ops.cpu_adam import DeepSpeedCPUAdam
from tests.runtime.test_engine import make_model, mse

UPSTREAM = ("transformers", "accelerate")
# What upstream references that the compat package does not resolve, and why
NOT_YET = {
    "deepspeed.utils.is_initialized": "ESMFold calls it inside a guard; DeepSpeed 0.19.8 lacks it too",
    "deepspeed.tp_model_init": "issue 19 (tensor parallelism)",
    "deepspeed.runtime.sequence_parallel.ulysses_sp.UlyssesSPAttentionHF": "ALST, DeepSpeed's HF-side Ulysses",
    "deepspeed.runtime.sequence_parallel.ulysses_sp.UlyssesSPDataLoaderAdapter": "ALST, DeepSpeed's HF-side Ulysses",
}
# engine methods upstream calls, by the name it holds the engine under, per file
ENGINE_RECEIVERS = {
    "accelerate/utils/deepspeed.py": ("self.engine",),
    "accelerate/accelerator.py": ("engine", "self.deepspeed_engine_wrapped.engine"),
    "transformers/trainer.py": ("self.deepspeed",),
    "transformers/integrations/deepspeed.py": ("deepspeed_engine",),
}


def _source_files():
    for package in UPSTREAM:
        root = Path(importlib.util.find_spec(package).origin).parent
        yield from (p for p in root.rglob("*.py") if "deepspeed" in p.read_text(errors="ignore")
                    and "test" not in p.relative_to(root).parts[0])


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def deepspeed_references(path: Path) -> set[str]:
    """Dotted names under `deepspeed` the file imports or reads (aliases of `import deepspeed` followed)."""
    tree, found = ast.parse(path.read_text()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "deepspeed":
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "deepspeed")
        elif isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name and name.split(".")[0] == "deepspeed":
                found.add(name)
    return found


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                value = getattr(value, attribute)
        except AttributeError:
            return False
        return True
    return False


def _longest(names: set[str]) -> set[str]:
    """Drop names that are a prefix of another (deepspeed.zero when deepspeed.zero.Init is there)."""
    return {n for n in names if not any(other.startswith(n + ".") for other in names)}


def test_every_deepspeed_name_upstream_uses_resolves():
    references = _longest(set().union(*(deepspeed_references(p) for p in _source_files())))
    assert len(references) > 20  # the scan found their DeepSpeed code
    missing = {name for name in references if not _resolves(name)}
    assert missing == set(NOT_YET), f"unresolved: {sorted(missing - set(NOT_YET))}; now there: " \
                                    f"{sorted(set(NOT_YET) - missing)}"


def test_every_engine_method_upstream_calls_exists():
    engine, _, _, _ = deepspeed_ext.initialize(model=make_model(), config={
        "train_batch_size": 2, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}})
    roots = {package: Path(importlib.util.find_spec(package).origin).parent.parent for package in UPSTREAM}
    called = set()
    for relative, receivers in ENGINE_RECEIVERS.items():
        tree = ast.parse((roots[relative.split("/")[0]] / relative).read_text())
        called.update(node.attr for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and _dotted(node.value) in receivers)
    assert {"backward", "step", "set_gradient_accumulation_boundary", "load_checkpoint", "destroy"} <= called
    assert not [name for name in sorted(called) if not hasattr(engine, name)]


@pytest.fixture
def accelerator_state():
    """Accelerate's wrappers read the Accelerator's state: one for the test, then reset."""
    Accelerator(cpu=True)
    yield
    AcceleratorState._reset_state(True)


def test_accelerate_wrappers_drive_the_engine(accelerator_state):
    """accelerate.utils.deepspeed's wrappers, as Accelerator.backward / optimizer.step use them."""
    model = make_model()
    client = map_pytorch_optim_to_deepspeed(torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1))
    assert isinstance(client, DeepSpeedCPUAdam) and client.param_groups[0]["weight_decay"] == 0.1
    engine, optimizer, _, scheduler = deepspeed_ext.initialize(
        model=model, optimizer=client, config={"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
                                               "gradient_clipping": 1.0, "zero_optimization": {"stage": 2},
                                               "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 2}}})
    wrapped, wrapped_optimizer = DeepSpeedEngineWrapper(engine), DeepSpeedOptimizerWrapper(optimizer)
    DeepSpeedSchedulerWrapper(scheduler, [wrapped_optimizer]).step()  # a no-op: the engine steps it
    x, y = torch.randn(4, 6), torch.randn(4, 1)
    wrapped.backward(mse(engine, x, y), sync_gradients=False)
    assert engine.global_steps == 0
    wrapped.backward(mse(engine, x, y), sync_gradients=True)
    assert engine.global_steps == 1 and wrapped_optimizer.step_was_skipped is False
    assert isinstance(wrapped.get_global_grad_norm(), float)
    engine.destroy()
    with pytest.raises(RuntimeError, match="destroyed"):
        engine.backward(mse(engine, x, y))
