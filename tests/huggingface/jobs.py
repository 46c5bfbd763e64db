"""Hugging Face jobs run on CPU ranks by the tests in this folder: a Trainer on a small
random-init GPT-2 under a DeepSpeed config (HF's "auto" templates), and an Accelerate loop.
Every function here runs on each rank of a job (the rank harness, our launcher or torchrun)."""

from __future__ import annotations

import copy
import json
import os

import torch

VOCAB, SEQUENCE = 96, 32


def gpt2_config():
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB, n_positions=SEQUENCE, n_embd=32, n_layer=2, n_head=4,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


class TokenData(torch.utils.data.Dataset):
    """Random token sequences (fixed seed) with labels = inputs: language modelling."""

    def __init__(self, count: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, VOCAB, (count, SEQUENCE), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}


# HF's documented templates: every value the Trainer knows is "auto"
ZERO2 = {
    "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                 "warmup_num_steps": "auto"}},
    "zero_optimization": {"stage": 2, "allgather_partitions": True, "allgather_bucket_size": 2e8,
                          "overlap_comm": True, "reduce_scatter": True, "reduce_bucket_size": "auto",
                          "contiguous_gradients": True},
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "wall_clock_breakdown": False,
}
ZERO3 = {
    **ZERO2,
    "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True, "sub_group_size": 1e9,
                          "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                          "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
                          "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": True},
}


def ds_config(name: str) -> dict:
    """ZERO2, ZERO3 or ZERO3_OFFLOAD (CPU offload of the optimizer and params at stage 3); a
    name ending in "+hf_schedule" drops the scheduler section, so the Trainer schedules the LR
    as it does without DeepSpeed."""
    base, _, variant = name.partition("+")
    config = copy.deepcopy({"ZERO2": ZERO2, "ZERO3": ZERO3, "ZERO3_OFFLOAD": ZERO3}[base])
    if base == "ZERO3_OFFLOAD":
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        config["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": True}
    if variant == "hf_schedule":
        del config["scheduler"]
    return config


def _training_arguments(output_dir: str, deepspeed_config, max_steps: int, save_steps: int | None):
    from transformers import TrainingArguments

    saving = {"save_strategy": "steps", "save_steps": save_steps} if save_steps else {"save_strategy": "no"}
    return TrainingArguments(output_dir=output_dir, deepspeed=deepspeed_config, per_device_train_batch_size=2,
                             per_device_eval_batch_size=2, gradient_accumulation_steps=2, max_steps=max_steps,
                             learning_rate=5e-3, warmup_steps=1, logging_steps=1, report_to=[], seed=0, data_seed=0,
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, **saving)


def train_gpt2(config_name: str | None, output_dir: str, max_steps: int = 4, save_steps: int | None = None,
               resume: bool = False, save_model: bool = False) -> dict:
    """Train GPT-2 with the Trainer (config_name None: no DeepSpeed, plain DDP); returns the
    logged losses, eval / predict figures and, when asked, the saved model's path."""
    from transformers import AutoModelForCausalLM, Trainer

    config = ds_config(config_name) if config_name else None
    args = _training_arguments(output_dir, config, max_steps, save_steps)
    torch.manual_seed(0)
    # with a ZeRO-3 config, TrainingArguments' HfDeepSpeedConfig makes from_config build inside zero.Init
    model = AutoModelForCausalLM.from_config(gpt2_config())
    trainer = Trainer(model=model, args=args, train_dataset=TokenData(64), eval_dataset=TokenData(8, seed=1))
    trainer.train(resume_from_checkpoint=resume or None)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = trainer.evaluate()
    predictions = trainer.predict(TokenData(4, seed=2))
    result = {"losses": losses, "eval_loss": metrics["eval_loss"],
              "predict_loss": predictions.metrics["test_loss"], "rank": int(os.environ.get("RANK", "0"))}
    if save_model:
        trainer.save_model(os.path.join(output_dir, "final"))
        result["saved"] = os.path.join(output_dir, "final")
        result["trained"] = _gathered(trainer.model) if config_name and "ZERO3" in config_name else \
            {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    return result


def evaluate_only(config_name: str | None, output_dir: str) -> dict:
    """evaluate() and predict() of an untrained model: under ZeRO-3 the Trainer builds an
    engine without an optimizer for them."""
    from transformers import AutoModelForCausalLM, Trainer

    args = _training_arguments(output_dir, ds_config(config_name) if config_name else None, 1, None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(gpt2_config())
    trainer = Trainer(model=model, args=args, eval_dataset=TokenData(8, seed=1))
    return {"eval_loss": trainer.evaluate()["eval_loss"],
            "predict_loss": trainer.predict(TokenData(4, seed=2)).metrics["test_loss"]}


def _gathered(model) -> dict:
    import deepspeed_ext

    with deepspeed_ext.zero.GatheredParameters(list(model.parameters())):
        return {name: p.detach().clone() for name, p in model.named_parameters()}


def zero3_from_config_and_pretrained(folder: str) -> dict:
    """Under HfDeepSpeedConfig (ZeRO-3), from_config and from_pretrained build partitioned
    models; returns, per way, whether every param was partitioned and the gathered weights
    equal the same seed's plain model (from_config) or the saved one (from_pretrained)."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    import deepspeed_ext

    deepspeed_ext.init_distributed(verbose=False)
    torch.manual_seed(0)
    plain = AutoModelForCausalLM.from_config(gpt2_config())
    if dist.get_rank() == 0:
        plain.save_pretrained(folder)
    dist.barrier()
    config = ds_config("ZERO3")
    config.update(train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=1)
    keep_alive = HfDeepSpeedConfig(config)  # noqa: F841 (transformers holds only a weak reference)
    result = {}
    for way in ("from_config", "from_pretrained"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(gpt2_config()) if way == "from_config" \
            else AutoModelForCausalLM.from_pretrained(folder)
        partitioned = all(hasattr(p, "ds_tensor") for p in model.parameters())
        weights = _gathered(model)
        expected = dict(plain.named_parameters())
        result[way] = {"partitioned": partitioned,
                       "max_difference": max(float((weights[n] - expected[n]).abs().max()) for n in weights)}
    return result


def dump(result: dict, path: str) -> None:
    with open(path, "w") as handle:
        json.dump(result, handle)


def trainer_to_file(config_name: str, output_dir: str) -> None:
    """train_gpt2 for a launcher: rank r writes its result to output_dir/result<r>.json."""
    result = train_gpt2(config_name, output_dir)
    dump(result, os.path.join(output_dir, f"result{result['rank']}.json"))


def accelerate_loop(zero_stage: str, folder: str) -> None:
    """A hand-written Accelerate loop under DeepSpeedPlugin(zero_stage) ("ddp": no DeepSpeed):
    4 optimizer steps of 2 accumulated micro-batches, save_state, 2 more steps, load_state,
    the same 2 steps again. Rank r writes folder/accelerate<r>.json: the losses and whether
    get_state_dict gave the whole model."""
    from accelerate import Accelerator, DeepSpeedPlugin
    from accelerate.utils import InitProcessGroupKwargs
    from transformers import GPT2LMHeadModel

    if zero_stage == "ddp":
        accelerator = Accelerator(gradient_accumulation_steps=2, cpu=True)
    else:
        stage = int(zero_stage)
        plugin = DeepSpeedPlugin(zero_stage=stage, gradient_accumulation_steps=2, zero3_save_16bit_model=stage == 3)
        # On a machine without GPUs Accelerate finds no backend for DeepSpeed and runs the job as
        # one process unless told gloo (the same with Microsoft's DeepSpeed)
        accelerator = Accelerator(deepspeed_plugin=plugin, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    # two loaders of 8 and 4 micro-batches a rank: each ends on an accumulation boundary
    # (Accelerate syncs at a loader's end), and the second can be run twice
    first_loader = torch.utils.data.DataLoader(TokenData(32), batch_size=2, shuffle=False)
    second_loader = torch.utils.data.DataLoader(TokenData(16, seed=3), batch_size=2, shuffle=False)
    model, optimizer, first_loader, second_loader = accelerator.prepare(model, optimizer, first_loader, second_loader)

    def run(loader) -> list[float]:
        losses = []
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            losses.append(float(accelerator.reduce(loss.detach(), reduction="mean")))
        return losses

    first = run(first_loader)
    accelerator.save_state(os.path.join(folder, "state"))
    after_save = run(second_loader)
    accelerator.load_state(os.path.join(folder, "state"))
    after_load = run(second_loader)
    result = {"first": first, "after_save": after_save, "after_load": after_load,
              "skipped": optimizer.step_was_skipped}
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        reference = GPT2LMHeadModel(gpt2_config()).state_dict()
        result["whole_state_dict"] = all(tuple(state_dict[k].shape) == tuple(v.shape)
                                         for k, v in reference.items() if k in state_dict)
        result["state_dict_keys"] = sorted(state_dict)
    dump(result, os.path.join(folder, f"accelerate{accelerator.process_index}.json"))
    accelerator.free_memory()  # under DeepSpeed: engine.destroy()


if __name__ == "__main__":  # deepspeed / torchrun / accelerate launch --module tests.huggingface.jobs NAME [ARGS]
    import sys

    name, *arguments = [arg for arg in sys.argv[1:] if not arg.startswith("--local_rank")]
    globals()[name](*arguments)
