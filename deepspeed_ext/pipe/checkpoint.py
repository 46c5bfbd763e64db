"""Pipeline checkpoints in DeepSpeed's layout, inside the usual tag folder:

    <tag>/layer_{i:02d}-model_states.pt            layer i's state dict (a tied layer's module
                                                   at every index that uses it)
    <tag>/mp_rank_{s:02d}_model_states.pt          stage s: module None, optimizer (stage 0),
                                                   fp32 masters, scheduler, scaler, counters
    <tag>/zero_pp_rank_{d}_mp_rank_{s:02d}_optim_states.pt   ZeRO-1: data-parallel rank d's shards
    <tag>/rng_state_rank_{r}.pt

With a `model` (tensor-parallel) axis the layer files carry it: layer_03-model_01-model_states.pt.
Layer files do not depend on the stage count, so the weights load on any number of stages,
or into a plain model of the same layers (`plain_state_dict`).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import torch

from ..runtime import checkpoint


def layer_file(index: int, rank_repr: str = "") -> str:
    return f"layer_{index:02d}{'-' + rank_repr if rank_repr else ''}-model_states.pt"


def stage_file(mp_rank: int) -> str:
    return f"mp_rank_{mp_rank:02d}_model_states.pt"


def layer_files(folder: Path) -> dict[int, Path]:
    """Layer index -> its file (the first model-parallel rank's where there are several)."""
    found: dict[int, Path] = {}
    for name in sorted(glob.glob(str(folder / "layer_*-model_states.pt"))):
        index = int(Path(name).name.split("-")[0][len("layer_"):])
        found.setdefault(index, Path(name))
    return found


def load_layer(folder: Path, index: int, rank_repr: str = "") -> dict:
    path = folder / layer_file(index, rank_repr)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the checkpoint in {folder} has no weights for layer {index} "
                                "(saved from another model, or incomplete)")
    return torch.load(path, map_location="cpu", weights_only=False)


def plain_state_dict(load_dir: str | os.PathLike, tag: str | None = None) -> dict[str, torch.Tensor]:
    """A pipeline checkpoint's weights as the state dict of a plain torch.nn.Sequential of the
    same layers ("3.weight" is layer 3's weight): every layer file, whatever the number of
    stages it was saved on. Raises FileNotFoundError when there is no checkpoint."""
    folder = checkpoint.resolve(load_dir, tag)
    if folder is None:
        raise FileNotFoundError(f"no checkpoint in {load_dir}: it has no 'latest' file; pass tag=")
    files = layer_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no layer_XX-model_states.pt files: not a pipeline checkpoint")
    return {f"{index}.{name}": value for index, path in sorted(files.items())
            for name, value in torch.load(path, map_location="cpu", weights_only=False).items()}
