"""Evaluate the trained digits classifier: print the test accuracy and save two pictures,
a test image with its prediction and truth (sample.png) and the training loss curve
(loss_curve.png).

    python examples/digits/evaluate.py [--output_dir examples/digits/output]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import torch
from model import DigitsNet, digits_split


def evaluate(output_dir: Path, seed: int = 0) -> float:
    model = DigitsNet()
    model.load_state_dict(torch.load(output_dir / "model.pt"))
    model.eval()
    _, test_set = digits_split(seed)
    images, labels = test_set.tensors
    with torch.no_grad():
        predictions = model(images).argmax(dim=1)
    accuracy = (predictions == labels).float().mean().item()

    figure, axis = plt.subplots(figsize=(3, 3.3))
    axis.imshow(images[0], cmap="gray_r")
    axis.set_title(f"predicted {predictions[0].item()}, truth {labels[0].item()}")
    axis.axis("off")
    figure.savefig(output_dir / "sample.png", dpi=100)
    plt.close(figure)

    losses = json.loads((output_dir / "losses.json").read_text())
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.plot(losses)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("training loss (rank 0)")
    figure.tight_layout()
    figure.savefig(output_dir / "loss_curve.png", dpi=100)
    plt.close(figure)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=str(Path(__file__).parent / "output"))
    args = parser.parse_args()
    accuracy = evaluate(Path(args.output_dir))
    print(f"test accuracy {accuracy:.2%}; pictures in {args.output_dir}/sample.png and loss_curve.png")


if __name__ == "__main__":
    main()
