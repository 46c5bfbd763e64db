"""save_checkpoint / load_checkpoint of a PipelineEngine, in the layout of checkpoint.py:
weights per layer (written by each stage's first data-parallel rank), the rest per stage,
ZeRO-1 shards per rank, all staged and renamed into place like every other checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch.distributed as dist

from ..runtime import checkpoint
from ..runtime.config_schema import ConfigError
from ..runtime.nested import clone_tensors_for_torch_save
from ..runtime.zero import checkpointing as zero_checkpoint
from ..version import __version__
from .checkpoint import layer_file, load_layer, stage_file


class PipelineCheckpoints:
    """Mixed into PipelineEngine (uses its module, grid, zero and DeepSpeedEngine's states)."""

    def _rank_repr(self) -> str:
        return self.module.topology().get_rank_repr(self.global_rank)

    def save_checkpoint(self, save_dir: str | os.PathLike, tag=None, client_state: dict | None = None,
                        save_latest: bool = True) -> bool:
        self._check_alive()
        client_state = client_state or {}
        if PIPELINE_KEYS & set(client_state):
            raise ValueError(f"client_state keys {sorted(PIPELINE_KEYS & set(client_state))} clash with the pipeline "
                             "engine's own checkpoint keys")
        module = self.module
        states = {"module": None, **self._training_states(client_state),
                  "pipeline_parts": list(module.parts), "num_stages": self.num_stages}
        tag = str(tag) if tag is not None else f"global_step{self.global_steps}"
        tag = checkpoint.agreed_tag(save_dir, tag, self._config.checkpoint.tag_validation)
        mp_rank = self.grid.get_model_parallel_rank()
        files = {}
        if self.dp_rank == 0:  # the data-parallel replicas hold the same weights
            for index, _ in module.local_layers():
                layer = module.layer_module(index)
                if layer is not None:  # cloned: ZeRO's params are views into one flat buffer
                    files[layer_file(index, self._rank_repr())] = clone_tensors_for_torch_save(layer.state_dict())
            files[stage_file(mp_rank)] = states
        zero = self.zero
        if zero is None:
            checkpoint.save(save_dir, tag, files, self.global_rank, save_latest, self.global_rank == 0)
            return True
        with zero.resident():
            files[zero_checkpoint.optim_file(self.dp_rank, self.bfloat16_enabled(), mp_rank)] = {
                "optimizer_state_dict": zero_checkpoint.optimizer_state(zero), "ds_config": self._config.raw,
                "ds_version": __version__}
            checkpoint.save(save_dir, tag, files, self.global_rank, save_latest, self.global_rank == 0)
        return True

    def load_checkpoint(self, load_dir: str | os.PathLike, tag=None, load_module_strict: bool = True,
                        load_optimizer_states: bool = True, load_lr_scheduler_states: bool = True,
                        load_module_only: bool = False):
        """Load a pipeline checkpoint, saved on this or another number of stages. On another
        partition only the weights and counters carry over (each stage's optimizer state
        belongs to that stage's layers): pass load_optimizer_states=False, or
        load_module_only=True for the weights alone."""
        self._check_alive()
        folder = checkpoint.resolve(load_dir, tag)
        if folder is None:
            return None, None
        module = self.module
        mp_rank = self.grid.get_model_parallel_rank()
        states_file = folder / stage_file(mp_rank)
        if not states_file.is_file():
            states_file = folder / stage_file(0)  # saved on fewer stages
        states, rng = checkpoint.load_states(folder, self.global_rank, states_file.name)
        if "pipeline_parts" not in states:
            raise FileNotFoundError(f"{states_file} is not a pipeline checkpoint (no pipeline_parts): load it with "
                                    "the engine of the model that saved it")
        same_partition = states["pipeline_parts"] == list(module.parts)
        if not same_partition and load_optimizer_states and not load_module_only:
            raise ConfigError(f"{folder} was saved with the layers cut at {states['pipeline_parts']}, this pipeline "
                              f"cuts them at {list(module.parts)}: optimizer states belong to a stage's layers and do "
                              "not carry over; pass load_optimizer_states=False (weights, schedule and counters) or "
                              "load_module_only=True")
        for index, _ in module.local_layers():
            layer = module.layer_module(index)
            if layer is not None:
                layer.load_state_dict(load_layer(folder, index, self._rank_repr()), strict=load_module_strict)
        zero = self.zero
        resumed = same_partition and not load_module_only
        if zero is not None:
            if resumed:
                with zero.resident():
                    zero_checkpoint.load_optimizer_state(zero, folder, self.bfloat16_enabled(), load_optimizer_states,
                                                         mp_rank)
                zero.publish()
            else:
                zero.refresh_masters_from_model()
        self._restore_masters(states.get("fp32_master_weights") if resumed else None)
        if not load_module_only:
            self._restore_training_states(states, rng if same_partition else None,
                                          load_optimizer_states and zero is None, load_lr_scheduler_states)
        return str(folder), {k: v for k, v in states.items() if k not in self._RESERVED_KEYS | PIPELINE_KEYS}


    def save_16bit_model(self, save_dir: str | os.PathLike, save_filename: str = "pytorch_model.bin") -> bool:
        """The whole model's weights, in the dtype it trains in, as one state dict named as a
        plain torch.nn.Sequential of its layers ("3.weight"; a tied layer at each of its
        indices), gathered from every stage and written by rank 0."""
        self._check_alive()
        module, mine = self.module, {}
        if self.dp_rank == 0 and self.grid.get_slice_parallel_rank() == 0:
            for index, _ in module.local_layers():
                layer = module.layer_module(index)
                if layer is not None:
                    mine.update({f"{index}.{k}": v for k, v in clone_tensors_for_torch_save(layer.state_dict()).items()})
        gathered = [None] * self.world_size if self.global_rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if self.global_rank == 0:
            os.makedirs(save_dir, exist_ok=True)
            state = {k: v for part in gathered for k, v in part.items()}
            checkpoint.atomic_torch_save(dict(sorted(state.items(), key=lambda kv: _layer_order(kv[0]))),
                                         Path(save_dir) / save_filename)
        return True


def _layer_order(name: str) -> tuple[int, str]:
    index, _, rest = name.partition(".")
    return int(index), rest


PIPELINE_KEYS = frozenset({"pipeline_parts", "num_stages"})
