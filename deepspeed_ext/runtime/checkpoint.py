"""Checkpoints in DeepSpeed's layout, written so that a crash at any moment leaves the
previous checkpoint and `latest` intact:

    save_dir/latest                              the newest tag
    save_dir/<tag>/mp_rank_00_model_states.pt    module, optimizer, lr_scheduler, global_steps,
                                                 ds_config, ds_version, and the client's keys
    save_dir/<tag>/rng_state_rank_<r>.pt         each rank's RNG states (for bit-exact resume)

A tag is first written to a hidden folder beside it and renamed into place; `latest` is
replaced last, by an atomic rename. Every file and folder is fsynced before the rename that
publishes it, so a power loss (not only a killed process) leaves either the old checkpoint
or the new one (the cost per save: docs/checkpoints.md).
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


def _write_durably(path: Path, write) -> None:
    """write(file) into a new file at `path`, with the bytes on disk (not only in the page
    cache) when it returns."""
    with open(path, "wb") as out:
        write(out)
        out.flush()
        os.fsync(out.fileno())


def durable_torch_save(obj, path: Path) -> None:
    _write_durably(path, lambda out: torch.save(obj, out))


def fsync_folder(path: Path) -> None:
    """Make the entries of a folder (files created or renamed in it) survive a power loss."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _atomic_write(path: Path, write) -> None:
    """Write a temporary file in the same folder, durably, and rename it over `path`."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _write_durably(temporary, write)
    os.replace(temporary, path)
    fsync_folder(path.parent)


def atomic_torch_save(obj, path: Path) -> None:
    _atomic_write(path, lambda out: torch.save(obj, out))


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def agreed_tag(save_dir, tag: str, mode: str) -> str:
    """The tag every rank saves under, checked across ranks before anything is written, so
    that every rank raises the same error (none is left waiting for another). An empty
    save_dir or a tag that is not a folder name is refused. checkpoint.tag_validation: when
    the ranks' tags differ, Fail raises; Warn warns, Ignore does not, and both then save
    under rank 0's tag. (DeepSpeed saves each rank under its own tag, leaving folders no load
    can use; one shared folder is the only layout this checkpoint has.)"""
    world = dist.get_world_size() if dist.is_initialized() else 1
    given = [(str(save_dir), tag)] * world
    if world > 1:
        dist.all_gather_object(given, given[0])
    for rank, (folder, name) in enumerate(given):
        where = f" (on rank {rank})" if world > 1 else ""
        if not folder.strip():
            raise ValueError(f"save_checkpoint: save_dir is empty{where}; name the folder to save in")
        if not name.strip() or "/" in name or "\0" in name or name in (".", ".."):
            raise ValueError(f"save_checkpoint: tag {name!r}{where} is not a folder name")
    tags = [name for _, name in given]
    if len(set(tags)) == 1:
        return tag
    differing = ", ".join(f"rank {r}: {t!r}" for r, t in enumerate(tags))
    message = f"the checkpoint tag differs across ranks ({differing})"
    if mode == "Fail":
        raise ValueError(f"{message}; checkpoint.tag_validation is Fail, so nothing was saved. Leave rank-specific "
                         "parts (rank, time) out of the tag")
    if mode == "Warn":
        warnings.warn(f"{message}; saving every rank under rank 0's tag {tags[0]!r} (checkpoint.tag_validation: "
                      "Ignore silences this, Fail refuses)", stacklevel=3)
    return tags[0]


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
    durable_torch_save(rng_states(), staging / f"rng_state_rank_{rank}.pt")
    for name, obj in files.items():
        durable_torch_save(obj, staging / name)
    _barrier()
    if leader:
        fsync_folder(staging)
        retired = root / f".{tag}.retired"
        if final.exists():  # overwriting a tag: keep the old one reachable until the new one is in place
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(final, retired)
        os.replace(staging, final)
        fsync_folder(root)
        shutil.rmtree(retired, ignore_errors=True)
        if save_latest:
            _atomic_write(root / LATEST, lambda out: out.write(tag.encode()))
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
