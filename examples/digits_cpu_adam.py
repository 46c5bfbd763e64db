"""Quick start: train a small classifier on scikit-learn's digits with DeepSpeedCPUAdam.

    python examples/digits_cpu_adam.py [--epochs 20] [--dtype bf16]

The digits data ship inside scikit-learn (no download). The first run JIT-compiles the
cpu_adam op (about 10 s on 2 cores); later runs load it from the build cache.
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from deepspeed_ext.ops.adam import DeepSpeedCPUAdam

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def digits_tensors(seed: int = 0):
    images, labels = load_digits(return_X_y=True)
    images = torch.tensor(images / 16.0, dtype=torch.float32)  # pixel values are 0..16
    labels = torch.tensor(labels)
    return train_test_split(images, labels, test_size=0.2, random_state=seed, stratify=labels)


def make_model(dtype: torch.dtype) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 128), torch.nn.GELU(), torch.nn.Linear(128, 10)
    ).to(dtype)


def train(epochs: int = 20, batch_size: int = 64, lr: float = 3e-3, dtype: torch.dtype = torch.float32,
          seed: int = 0, log=print) -> float:
    """Trains and returns the test accuracy."""
    torch.manual_seed(seed)
    train_x, test_x, train_y, test_y = digits_tensors(seed)
    model = make_model(dtype)
    optimizer = DeepSpeedCPUAdam(model.parameters(), lr=lr, weight_decay=0.01)
    for epoch in range(epochs):
        order = torch.randperm(len(train_x))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(model(train_x[batch].to(dtype)).float(), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        log(f"epoch {epoch + 1:3d}  train loss {total / len(train_x):.4f}")
    with torch.no_grad():
        predictions = model(test_x.to(dtype)).argmax(dim=1)
    return (predictions == test_y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    args = parser.parse_args()
    started = time.perf_counter()
    accuracy = train(args.epochs, lr=args.lr, dtype=DTYPES[args.dtype])
    print(f"test accuracy {accuracy:.2%} after {args.epochs} epochs ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
