"""Checkpoint input checked before anything is written: an empty folder or tag, and ranks
that disagree on the tag (checkpoint.tag_validation Fail / Warn / Ignore: every rank raises
the same error or saves under one tag, never a hang); and the fsyncs that make a save survive
a power loss, in the order that keeps the previous checkpoint until `latest` moves."""

import os
import warnings

import pytest
import torch

import deepspeed_ext as deepspeed
from deepspeed_ext.runtime import checkpoint
from tests.ranks import run_ranks

from .test_engine import ADAM, make_model


def engine_with(tag_validation="Warn"):
    config = {"train_batch_size": 2, "optimizer": ADAM, "checkpoint": {"tag_validation": tag_validation}}
    return deepspeed.initialize(model=make_model(), config=config)[0]


@pytest.mark.parametrize(("folder", "tag", "message"), [
    ("", None, "save_dir is empty"),
    ("ok", "", "tag '' is not a folder name"),
    ("ok", "a/b", "tag 'a/b' is not a folder name"),
    ("ok", "..", "tag '..' is not a folder name"),
])
def test_bad_save_arguments_write_nothing(tmp_path, monkeypatch, folder, tag, message):
    monkeypatch.chdir(tmp_path)
    engine = engine_with()
    with pytest.raises(ValueError, match=message):
        engine.save_checkpoint(folder, tag=tag)
    assert os.listdir(tmp_path) == []


def save_with_rank_tags(folder: str, mode: str, same_folder: bool):
    """Each rank saves with its own tag (or, with same_folder False, rank 1 passes an empty
    folder): returns (the error each rank raised or None, warnings, folder contents)."""
    engine = engine_with(mode)
    rank = engine.global_rank
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            engine.save_checkpoint(folder if same_folder or rank == 0 else "", tag=f"step1-rank{rank}")
            error = None
        except ValueError as raised:
            error = str(raised)
    torch.distributed.barrier()
    listing = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return error, [str(w.message) for w in caught if "checkpoint tag" in str(w.message)], listing


def test_tag_validation_fail_raises_on_every_rank_before_writing(tmp_path):
    for error, _, listing in run_ranks(save_with_rank_tags, 2, str(tmp_path / "ckpt"), "Fail", True):
        assert "the checkpoint tag differs across ranks (rank 0: 'step1-rank0', rank 1: 'step1-rank1')" in error
        assert listing == []


@pytest.mark.parametrize("mode", ["Warn", "Ignore"])
def test_tag_validation_warn_and_ignore_save_under_rank0s_tag(tmp_path, mode):
    for rank, (error, warned, listing) in enumerate(run_ranks(save_with_rank_tags, 2, str(tmp_path / "ckpt"), mode,
                                                              True)):
        assert error is None and listing == ["latest", "step1-rank0"]
        assert bool(warned) == (mode == "Warn")
    assert sorted(os.listdir(tmp_path / "ckpt" / "step1-rank0")) == [
        checkpoint.MODEL_STATES, "rng_state_rank_0.pt", "rng_state_rank_1.pt"]


def test_one_rank_with_an_empty_folder_fails_every_rank(tmp_path):
    for error, _, listing in run_ranks(save_with_rank_tags, 2, str(tmp_path / "ckpt"), "Warn", False):
        assert "save_dir is empty (on rank 1)" in error and listing == []


def test_files_and_folders_are_fsynced_before_latest_moves(tmp_path, monkeypatch):
    engine = engine_with()
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, target):
        events.append(("rename", str(target)))
        real_replace(source, target)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    engine.save_checkpoint(tmp_path, tag="t1")
    root, staging = str(tmp_path), str(tmp_path / ".t1.staging")
    latest = events.index(("rename", str(tmp_path / "latest")))
    synced = [path for kind, path in events[:latest] if kind == "fsync"]
    for name in (checkpoint.MODEL_STATES, "rng_state_rank_0.pt"):
        assert os.path.join(staging, name) in synced
    assert synced.index(staging) < events.index(("rename", str(tmp_path / "t1")))  # the folder's entries first
    assert root in synced  # the tag's rename into place
    assert events[latest + 1] == ("fsync", root)  # and latest's
