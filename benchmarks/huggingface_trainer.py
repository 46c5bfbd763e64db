"""Hugging Face's Trainer on deepspeed_ext next to the same Trainer on Microsoft's DeepSpeed and
without DeepSpeed (plain DDP), side by side in one run: losses and time per optimizer step.

    python benchmarks/huggingface_trainer.py [--peer-python PATH] [--stage 2] [--steps 12]

A random-init GPT-2 (4 layers, width 256, sequences of 128 tokens) on 2 CPU ranks under
torchrun, with HF's ZeRO "auto" template (AdamW, WarmupLR). `--peer-python` is a Python whose
`import deepspeed` is Microsoft's DeepSpeed (e.g. a venv made with --system-site-packages and
`pip install deepspeed==0.19.8`); without it that column is skipped. The first two steps
(JIT builds, warm-up) are left out of the time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

WARMUP_STEPS = 2


def ds_config(stage: int) -> dict:
    return {
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                  "weight_decay": "auto"}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                     "warmup_num_steps": "auto"}},
        "zero_optimization": {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                              "reduce_bucket_size": "auto"},
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto", "steps_per_print": 1000,
    }


def worker(stage: int, steps: int, out: str) -> None:
    """One rank of the run (started by torchrun)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 512, (steps * 8 + 8, 128), generator=generator)
    data = [{"input_ids": t, "labels": t} for t in tokens]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=128, n_embd=256, n_layer=4, n_head=4))
    with tempfile.TemporaryDirectory() as folder:
        args = TrainingArguments(output_dir=folder, deepspeed=ds_config(stage) if stage >= 0 else None,
                                 per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=steps,
                                 learning_rate=1e-3, warmup_steps=2, logging_steps=1, save_strategy="no",
                                 report_to=[], seed=0, use_cpu=True, disable_tqdm=True)
        clock = StepClock()
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[clock])
        trainer.train()
    if int(os.environ["RANK"]) == 0:
        timed = clock.times[WARMUP_STEPS:]
        with open(out, "w") as handle:
            json.dump({"losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
                       "step_seconds": (timed[-1] - timed[0]) / (len(timed) - 1)}, handle)


def run(python: str, stage: int, steps: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([python, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                        __file__, "--worker", "--stage", str(stage), "--steps", str(steps), "--out", out.name],
                       check=True, env=env, capture_output=True)
        with open(out.name) as handle:
            return json.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default=None, help="a Python whose `import deepspeed` is Microsoft's")
    parser.add_argument("--stage", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.stage, args.steps, args.out)
        return
    results = {"deepspeed_ext": run(sys.executable, args.stage, args.steps),
               "no DeepSpeed (DDP)": run(sys.executable, -1, args.steps)}
    if args.peer_python:
        results["DeepSpeed"] = run(args.peer_python, args.stage, args.steps)
    ours = results["deepspeed_ext"]
    print(f"HF Trainer, GPT-2 4x256, 2 CPU ranks, ZeRO-{args.stage}, {args.steps} steps "
          f"(time per step after {WARMUP_STEPS})")
    for name, result in results.items():
        same = "identical losses" if result["losses"] == ours["losses"] else \
            f"max loss difference {max(abs(a - b) for a, b in zip(result['losses'], ours['losses'])):.2e}"
        print(f"  {name:20s} {result['step_seconds'] * 1e3:8.1f} ms/step  "
              f"(deepspeed_ext / this: {ours['step_seconds'] / result['step_seconds']:.2f})  {same} to deepspeed_ext")


if __name__ == "__main__":
    main()
