"""MoE checkpoints in DeepSpeed's layout, beside the usual model states (which then hold no
expert weights):
    <tag>/layer_<L>_expert_<E>_mp_rank_00_model_states.pt   one file per expert of MoE layer L
                                                            (module order), keys with the global
                                                            expert number
    <tag>/expp_rank_<R>_mp_rank_00_optim_states.pt          stage 0: the optimizer of expert-
                                                            parallel rank R
Files hold whole experts by their global number, so any ep_size that divides num_experts
loads the weights; optimizer states need the ep_size they were saved with."""

from __future__ import annotations

from pathlib import Path

import torch

from deepspeed_ext.runtime.nested import clone_tensors_for_torch_save
from deepspeed_ext.utils import groups

EXPERTS = "deepspeed_moe.experts.deepspeed_experts."


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def expert_file(layer_id: int, expert_id: int) -> str:
    return f"layer_{layer_id}_expert_{expert_id}_mp_rank_00_model_states.pt"


def optimizer_file(ep_rank: int) -> str:
    return f"expp_rank_{ep_rank}_mp_rank_00_optim_states.pt"


def shared_state(module_state: dict, layers) -> dict:
    """The module's state without expert weights (the gate stays)."""
    experts = tuple(_prefix(name) + EXPERTS for name, _ in layers)
    return {key: value for key, value in module_state.items() if not key.startswith(experts)}


def expert_files(layers) -> dict[str, dict]:
    """This rank's expert files: written by the first replica (expert-data-parallel rank 0) only."""
    files = {}
    for layer_id, (name, layer) in enumerate(layers):
        group = layer.expert_group_name
        if groups._get_expert_data_parallel_rank(group) != 0:
            continue
        first = groups._get_expert_parallel_rank(group) * layer.num_local_experts
        for local, expert in enumerate(layer.deepspeed_moe.experts.deepspeed_experts):
            key = _prefix(name) + EXPERTS + str(first + local) + "."
            # cloned: a ZeRO param is a view of its flat buffer, which torch.save would write whole
            files[expert_file(layer_id, first + local)] = clone_tensors_for_torch_save(
                {key + k: v for k, v in expert.state_dict().items()})
    return files


def with_experts(folder: Path, module_state: dict, layers) -> dict:
    """module_state plus this rank's local experts, read from their files (renumbered local)."""
    merged = dict(module_state)
    for layer_id, (name, layer) in enumerate(layers):
        first = groups._get_expert_parallel_rank(layer.expert_group_name) * layer.num_local_experts
        for local in range(layer.num_local_experts):
            path = folder / expert_file(layer_id, first + local)
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: MoE layer {name or '<root>'} has {layer.num_experts} "
                                        "experts; the checkpoint was saved from another model or is incomplete")
            saved = _prefix(name) + EXPERTS + str(first + local) + "."
            here = _prefix(name) + EXPERTS + str(local) + "."
            for key, value in torch.load(path, map_location="cpu", weights_only=False).items():
                merged[here + key[len(saved):]] = value
    return merged


def layout(layers) -> list[int]:
    return [layer.ep_size for _, layer in layers]


def optimizer_rank() -> int:
    """Stage 0: the expert-parallel rank (in the largest ep_size) whose optimizer file is this rank's."""
    return groups._get_expert_parallel_rank(groups._get_max_expert_size_name())


def writes_optimizer() -> bool:
    """Whether this rank writes its optimizer file (replicas beyond the first hold the same states)."""
    return groups._get_expert_data_parallel_rank(groups._get_max_expert_size_name()) == 0
