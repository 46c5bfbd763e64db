"""Train the digits classifier with deepspeed_ext, as a DeepSpeed user would:

    deepspeed --num_gpus 2 examples/digits/ds_train.py --epochs 10 \\
        --deepspeed --deepspeed_config examples/digits/ds_config.json

Saves a checkpoint every epoch, then the final weights (model.pt) and the loss curve
(losses.json) into --output_dir; examples/digits/evaluate.py reads them. With
ds_config_zero3.json the same script trains under ZeRO-3 with CPU offload.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from model import DigitsNet, digits_split

import deepspeed_ext as deepspeed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=str(Path(__file__).parent / "output"))
    parser.add_argument("--local_rank", type=int, default=0, help="set by the launcher")
    args = deepspeed.add_config_arguments(parser).parse_args()

    torch.manual_seed(args.seed)
    train_set, _ = digits_split(args.seed)
    model = DigitsNet()
    engine, _, loader, _ = deepspeed.initialize(args=args, model=model, model_parameters=model.parameters(),
                                                training_data=train_set)
    output = Path(args.output_dir)
    losses = []
    for epoch in range(args.epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for images, labels in loader:
            loss = torch.nn.functional.cross_entropy(engine(images.to(engine.device)), labels.to(engine.device))
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        engine.save_checkpoint(output / "checkpoints", client_state={"epoch": epoch})
        if engine.global_rank == 0:
            print(f"epoch {epoch + 1}: mean loss {sum(losses[-len(loader):]) / len(loader):.4f}")
    engine.save_16bit_model(output, "model.pt")  # under ZeRO-3 every rank takes part in gathering it
    if engine.global_rank == 0:
        (output / "losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main()
