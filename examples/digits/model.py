"""The digits classifier and data split shared by ds_train.py and evaluate.py."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


class DigitsNet(torch.nn.Module):
    """A small MLP over the 8x8 digit images."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
            torch.nn.GELU(), torch.nn.Linear(hidden, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def digits_split(seed: int = 0):
    """(train, test) TensorDatasets of images scaled to [0, 1] (scikit-learn ships the data)."""
    images, labels = load_digits(return_X_y=True)
    images = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 8, 8)
    labels = torch.tensor(labels)
    train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=0.2, random_state=seed,
                                                        stratify=labels)
    return torch.utils.data.TensorDataset(train_x, train_y), torch.utils.data.TensorDataset(test_x, test_y)
