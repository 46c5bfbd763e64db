"""Checkpoints in DeepSpeed's layout, written so that a crash at any moment leaves the
previous checkpoint and `latest` intact:

    save_dir/latest                              the newest tag
    save_dir/<tag>/mp_rank_00_model_states.pt    module, optimizer, lr_scheduler, global_steps,
                                                 ds_config, ds_version, and the client's keys
    save_dir/<tag>/rng_state_rank_<r>.pt         each rank's RNG states (for bit-exact resume)

A tag is first written to a hidden folder beside it and renamed into place; `latest` is
replaced last, by an atomic rename.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

MODEL_STATES = "mp_rank_00_model_states.pt"
LATEST = "latest"


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename it over `path`."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save(save_dir: str | os.PathLike, tag: str, files: dict[str, object], rank: int, save_latest: bool,
         leader: bool) -> Path:
    """Write one checkpoint: this rank's files (name -> object) and its RNG states. The leader
    (rank 0; with node-local storage, each node's local rank 0) stages the folder, renames it
    into place and writes `latest`."""
    root = Path(save_dir)
    final = root / tag
    staging = root / f".{tag}.staging"
    if leader:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # left by an earlier crash
        staging.mkdir()
    _barrier()
    torch.save(rng_states(), staging / f"rng_state_rank_{rank}.pt")
    for name, obj in files.items():
        torch.save(obj, staging / name)
    _barrier()
    if leader:
        retired = root / f".{tag}.retired"
        if final.exists():  # overwriting a tag: keep the old one reachable until the new one is in place
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(final, retired)
        os.replace(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
        if save_latest:
            temporary = root / f".{LATEST}.tmp-{os.getpid()}"
            temporary.write_text(tag)
            os.replace(temporary, root / LATEST)
    _barrier()
    return final


def resolve(load_dir: str | os.PathLike, tag: str | None) -> Path | None:
    """The checkpoint folder to load, or None (with a warning) when there is none."""
    root = Path(load_dir)
    if tag is None:
        latest = root / LATEST
        if not latest.is_file():
            warnings.warn(f"no checkpoint to load: {latest} does not exist; pass tag= to load a specific one",
                          stacklevel=3)
            return None
        tag = latest.read_text().strip()
    folder = root / tag
    if not folder.is_dir():
        retired = root / f".{tag}.retired"  # a crash while overwriting this tag left the old copy here
        if retired.is_dir():
            return retired
        raise FileNotFoundError(f"checkpoint tag '{tag}' not found in {root}")
    return folder


def load_states(folder: Path, rank: int, model_file: str = MODEL_STATES) -> tuple[dict, dict | None]:
    """(model states, this rank's RNG states or None if it saved none)."""
    if not (folder / model_file).is_file():
        raise FileNotFoundError(f"{folder / model_file} not found: the checkpoint was saved with another ZeRO stage "
                                "or is incomplete")
    model_states = torch.load(folder / model_file, map_location="cpu", weights_only=False)
    rng_file = folder / f"rng_state_rank_{rank}.pt"
    rng = torch.load(rng_file, weights_only=False) if rng_file.is_file() else None
    return model_states, rng
