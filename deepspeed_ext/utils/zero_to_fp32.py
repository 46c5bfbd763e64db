#!/usr/bin/env python3
"""Consolidate a ZeRO checkpoint (each rank's shard of the fp32 master weights) into one fp32
state dict of the whole model.

    python zero_to_fp32.py CHECKPOINT_DIR OUTPUT [--tag TAG] [--safe_serialization]

This file needs only torch: the engine copies it into every checkpoint folder so a model can
be consolidated where deepspeed_ext is not installed. The engine also uses `assemble` from
here to resume on a different number of ranks, so the two can never disagree.

Each rank's optimizer file stores, per param group, its fp32 shard and the pieces it holds:
(param index, first element within the param, element count, offset within the shard).
"""

from __future__ import annotations

import argparse
import re
from collections import OrderedDict
from pathlib import Path

import torch

OPTIM_FILE = re.compile(r"^(bf16_)?zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt$")
MODEL_FILE = re.compile(r"^(zero_pp_rank_(\d+)_)?mp_rank_00_model_states\.pt$")
FP32_GROUPS = {1: "single_partition_of_fp32_groups", 2: "single_partition_of_fp32_groups", 3: "fp32_flat_groups"}


def assemble(shards, pieces_per_rank, numels) -> list[torch.Tensor]:
    """Whole 1-D tensors from every rank's shard and the pieces each shard holds."""
    fulls = [torch.empty(numel, dtype=shards[0].dtype) for numel in numels]
    covered = [0] * len(numels)
    for shard, pieces in zip(shards, pieces_per_rank):
        for index, first, count, offset in pieces:
            fulls[index][first:first + count] = shard[offset:offset + count]
            covered[index] += count
    missing = [index for index, (done, numel) in enumerate(zip(covered, numels)) if done != numel]
    if missing:
        raise ValueError(f"the shards do not cover params {missing}: a rank's file is missing or from another run")
    return fulls


def checkpoint_folder(checkpoint_dir, tag=None) -> Path:
    root = Path(checkpoint_dir)
    if tag is None:
        latest = root / "latest"
        if not latest.is_file():
            raise FileNotFoundError(f"{latest} not found: pass the tag (the checkpoint's folder name)")
        tag = latest.read_text().strip()
    folder = root / str(tag)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} not found")
    return folder


def rank_files(folder: Path, pattern: re.Pattern) -> list[Path]:
    """The files of `pattern` in rank order (rank number from the name)."""
    found = sorted((int(m.group(2) or 0), path) for path in folder.iterdir() if (m := pattern.match(path.name)))
    return [path for _, path in found]


def load_optimizer_shards(folder: Path) -> list[dict]:
    """Each rank's optimizer_state_dict, in rank order, checked to be a complete set."""
    paths = rank_files(folder, OPTIM_FILE)
    if not paths:
        raise FileNotFoundError(f"no zero_pp_rank_*_mp_rank_00_optim_states.pt in {folder}: not a ZeRO checkpoint")
    states = [torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"] for path in paths]
    expected = states[0]["partition_count"]
    if len(states) != expected:
        raise ValueError(f"{folder} holds {len(states)} optimizer shards but was saved by {expected} ranks")
    return states


def _fp32_groups(state: dict) -> list[torch.Tensor]:
    return state[FP32_GROUPS[state["zero_stage"]]]


def get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=None, exclude_frozen_parameters: bool = False):
    """The whole model's state dict (fp32 params, buffers as saved) from a ZeRO checkpoint."""
    folder = checkpoint_folder(checkpoint_dir, tag)
    shards = load_optimizer_shards(folder)
    model_states = [torch.load(path, map_location="cpu", weights_only=False)
                    for path in rank_files(folder, MODEL_FILE)]
    first = model_states[0]
    state_dict = OrderedDict((name, first["module"][name]) for name in first["buffer_names"])
    if not exclude_frozen_parameters:
        frozen = first["frozen_param_shapes"]
        if "frozen_param_fragments" in first:  # stage 3: frozen params are sharded like the others
            fulls = assemble([s["frozen_param_fragments"] for s in model_states],
                             [s["frozen_pieces"] for s in model_states], [shape.numel() for shape in frozen.values()])
            state_dict.update((name, full.view(shape)) for (name, shape), full in zip(frozen.items(), fulls))
        else:
            state_dict.update((name, first["module"][name].float()) for name in frozen)
    for group_index, shapes in enumerate(first["param_shapes"]):
        fulls = assemble([_fp32_groups(s)[group_index] for s in shards],
                         [s["partition_pieces"][group_index] for s in shards],
                         [shape.numel() for shape in shapes.values()])
        state_dict.update((name, full.view(shape)) for (name, shape), full in zip(shapes.items(), fulls))
    for alias, name in first["shared_params"].items():
        if name in state_dict:
            state_dict[alias] = state_dict[name]
    return state_dict


def convert_zero_checkpoint_to_fp32_state_dict(checkpoint_dir, output_file, tag=None,
                                               exclude_frozen_parameters: bool = False,
                                               safe_serialization: bool = False) -> Path:
    """Write the consolidated fp32 state dict to output_file (a folder gets pytorch_model.bin,
    or model.safetensors with safe_serialization)."""
    state_dict = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag, exclude_frozen_parameters)
    output = Path(output_file)
    if output.is_dir():
        output = output / ("model.safetensors" if safe_serialization else "pytorch_model.bin")
    if safe_serialization:
        try:
            from safetensors.torch import save_file
        except ImportError:
            raise ImportError("safe_serialization=True needs the safetensors package: pip install safetensors") \
                from None
        # safetensors refuses tensors that share memory (tied weights): store each once, contiguous
        save_file({name: tensor.contiguous().clone() for name, tensor in state_dict.items()}, str(output))
    else:
        torch.save(state_dict, output)
    return output


def load_state_dict_from_zero_checkpoint(model: torch.nn.Module, checkpoint_dir, tag=None) -> torch.nn.Module:
    """Load the consolidated fp32 weights into `model` (moved to the CPU, in fp32) and return it."""
    state_dict = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag)
    model = model.cpu().float()
    model.load_state_dict(state_dict, strict=False)
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint_dir", help="the folder holding `latest` and the tag folders")
    parser.add_argument("output_file", help="where to write the state dict (a file, or a folder)")
    parser.add_argument("-t", "--tag", default=None, help="the checkpoint tag (default: the one in `latest`)")
    parser.add_argument("--exclude_frozen_parameters", action="store_true")
    parser.add_argument("--safe_serialization", action="store_true", help="write safetensors")
    args = parser.parse_args(argv)
    written = convert_zero_checkpoint_to_fp32_state_dict(args.checkpoint_dir, args.output_file, args.tag,
                                                         args.exclude_frozen_parameters, args.safe_serialization)
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
