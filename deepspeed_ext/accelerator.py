"""Which device this process trains on, and what goes with it: CUDA where torch sees a GPU,
the CPU otherwise."""

from __future__ import annotations

import os

import torch


def device_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def current_device() -> torch.device:
    """This rank's device: cuda:LOCAL_RANK on a GPU machine, else the CPU."""
    if device_name() == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def communication_backend() -> str:
    """The torch.distributed backend for this device: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if device_name() == "cuda" else "gloo"


def synchronize() -> None:
    if device_name() == "cuda":
        torch.cuda.synchronize()
