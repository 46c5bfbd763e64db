"""The library's logger (DeepSpeed's `deepspeed.utils.logger`) and log_dist, which logs on
chosen ranks only."""

from __future__ import annotations

import logging

logger = logging.getLogger("DeepSpeed")
if not logger.handlers:  # one handler, even when this module is reloaded
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] [%(filename)s:%(lineno)d] %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def log_dist(message: str, ranks: list[int] | None = None, level: int = logging.INFO) -> None:
    """Log `message` on the given ranks (all when ranks is None or contains -1)."""
    from deepspeed_ext import comm

    rank = comm.get_rank()
    if ranks is None or -1 in ranks or rank in ranks:
        logger.log(level, f"[Rank {rank}] {message}")


def set_log_level_from_string(level: str) -> None:
    names = logging.getLevelNamesMapping() if hasattr(logging, "getLevelNamesMapping") else logging._nameToLevel
    if level.upper() not in names:
        raise ValueError(f"log level {level!r} is not one of {sorted(names)}")
    logger.setLevel(names[level.upper()])
