"""Training metrics to CSV files and TensorBoard (the config's csv_monitor and tensorboard
sections), written by rank 0 once per optimizer step, as DeepSpeed names them:
Train/Samples/train_loss, Train/Samples/lr and Train/Samples/loss_scale against the number
of samples seen."""

from __future__ import annotations

import csv
from pathlib import Path


class CsvMonitor:
    """One CSV file per metric in output_path/job_name/, rows of (samples, value)."""

    def __init__(self, output_path: str, job_name: str) -> None:
        self.folder = Path(output_path or "csv_monitor") / job_name
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, events: list[tuple[str, float, int]]) -> None:
        for name, value, step in events:
            path = self.folder / f"{name.replace('/', '_')}.csv"
            new = not path.exists()
            with open(path, "a", newline="") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(["step", name])
                writer.writerow([step, value])

    def close(self) -> None:
        """Nothing is held open between writes."""


class TensorBoardMonitor:
    def __init__(self, output_path: str, job_name: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("tensorboard.enabled needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(Path(output_path or "runs") / job_name))

    def write(self, events: list[tuple[str, float, int]]) -> None:
        for name, value, step in events:
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def monitors_from(config, rank: int) -> list:
    """The monitors the config enables (none on ranks other than 0)."""
    if rank != 0:
        return []
    chosen = []
    if config.csv_monitor.enabled:
        chosen.append(CsvMonitor(config.csv_monitor.output_path, config.csv_monitor.job_name))
    if config.tensorboard.enabled:
        chosen.append(TensorBoardMonitor(config.tensorboard.output_path, config.tensorboard.job_name))
    return chosen
