"""get_accelerator(): DeepSpeed's accelerator object, one for CUDA where torch sees a GPU and
one for the CPU otherwise. Code that must run on both asks it for devices, streams, memory
figures, RNG state and the communication backend instead of calling torch.cuda directly."""

from __future__ import annotations

import contextlib
import os

import torch


class Accelerator:
    """The device-neutral part; CudaAccelerator and CpuAccelerator fill in the device."""

    _name = ""
    _backend = ""

    def device_name(self, device_index: int | None = None) -> str:
        return self._name if device_index is None else f"{self._name}:{device_index}"

    def local_device(self) -> torch.device:
        """This rank's device (not a DeepSpeed method)."""
        return torch.device("cpu")

    def communication_backend_name(self) -> str:
        return self._backend

    def supported_dtypes(self) -> list[torch.dtype]:
        return [torch.float32] + [d for d, ok in ((torch.float16, self.is_fp16_supported()),
                                                  (torch.bfloat16, self.is_bf16_supported())) if ok]

    def on_accelerator(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == self._name

    def random(self):
        return torch.random

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def initial_seed(self) -> int:
        return torch.initial_seed()

    def pin_memory(self, tensor: torch.Tensor, align_bytes: int = 1) -> torch.Tensor:
        return tensor.pin_memory() if torch.cuda.is_available() else tensor

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        return torch.cuda.is_available() and tensor.is_pinned()

    def op_builder_dir(self) -> str:
        return "deepspeed_ext.ops.op_builder"

    def create_op_builder(self, class_name: str):
        """An instance of the named op builder (e.g. "CPUAdamBuilder"), or None if there is none."""
        builder = self.get_op_builder(class_name)
        return builder() if builder is not None else None

    def get_op_builder(self, class_name: str):
        from deepspeed_ext.ops import op_builder

        return getattr(op_builder, class_name, None)

    def visible_devices_envs(self) -> list[str]:
        return ["CUDA_VISIBLE_DEVICES"]

    def set_visible_devices_envs(self, env: dict, local_devices: list[int]) -> None:
        for name in self.visible_devices_envs():
            env[name] = ",".join(str(d) for d in local_devices)

    def export_envs(self) -> list[str]:
        return []

    def range_push(self, message: str) -> None:
        pass

    def range_pop(self) -> None:
        pass

    def is_synchronized_device(self) -> bool:
        return True

    def use_host_timers(self) -> bool:
        return self.is_synchronized_device()

    def resolves_data_dependency(self) -> bool:
        return self.is_synchronized_device()

    def handles_memory_backpressure(self) -> bool:
        return self.is_synchronized_device()


class CudaAccelerator(Accelerator):
    _name, _backend = "cuda", "nccl"

    def __init__(self) -> None:
        self._local_device: torch.device | None = None

    def local_device(self) -> torch.device:
        """cuda:LOCAL_RANK (modulo the GPUs this process sees), made current on first use;
        ZeRO-3 asks for it at every param release, so it is worked out once."""
        if self._local_device is None:
            self._local_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
            torch.cuda.set_device(self._local_device)
        return self._local_device

    def export_envs(self) -> list[str]:
        return ["NCCL"]

    def range_push(self, message: str) -> None:
        torch.cuda.nvtx.range_push(message)

    def range_pop(self) -> None:
        torch.cuda.nvtx.range_pop()

    def is_synchronized_device(self) -> bool:
        return False

    def is_available(self) -> bool:
        return torch.cuda.is_available()

    def device_count(self) -> int:
        return torch.cuda.device_count()

    def current_device(self) -> int:
        return torch.cuda.current_device()

    def current_device_name(self) -> str:
        return f"cuda:{torch.cuda.current_device()}"

    def set_device(self, device_index: int) -> None:
        torch.cuda.set_device(device_index)

    def synchronize(self, device_index: int | None = None) -> None:
        torch.cuda.synchronize(device_index)

    def manual_seed_all(self, seed: int) -> None:
        torch.cuda.manual_seed_all(seed)

    def get_rng_state(self, device_index: int | None = None) -> torch.Tensor:
        return torch.cuda.get_rng_state("cuda" if device_index is None else device_index)

    def set_rng_state(self, new_state: torch.Tensor, device_index: int | None = None) -> None:
        torch.cuda.set_rng_state(new_state, "cuda" if device_index is None else device_index)

    def default_generator(self, device_index: int):
        return torch.cuda.default_generators[device_index]

    def empty_cache(self) -> None:
        torch.cuda.empty_cache()

    def memory_allocated(self, device_index: int | None = None) -> int:
        return torch.cuda.memory_allocated(device_index)

    def max_memory_allocated(self, device_index: int | None = None) -> int:
        return torch.cuda.max_memory_allocated(device_index)

    def memory_reserved(self, device_index: int | None = None) -> int:
        return torch.cuda.memory_reserved(device_index)

    def max_memory_reserved(self, device_index: int | None = None) -> int:
        return torch.cuda.max_memory_reserved(device_index)

    def reset_peak_memory_stats(self, device_index: int | None = None) -> None:
        torch.cuda.reset_peak_memory_stats(device_index)

    def reset_max_memory_allocated(self, device_index: int | None = None) -> None:
        torch.cuda.reset_peak_memory_stats(device_index)

    def memory_stats(self, device_index: int | None = None) -> dict:
        return torch.cuda.memory_stats(device_index)

    def total_memory(self, device_index: int | None = None) -> int:
        return torch.cuda.get_device_properties(device_index or 0).total_memory

    def available_memory(self, device_index: int | None = None) -> int:
        return torch.cuda.mem_get_info(device_index)[0]

    def is_bf16_supported(self) -> bool:
        return torch.cuda.is_bf16_supported()

    def is_fp16_supported(self) -> bool:
        return True

    @property
    def Stream(self):
        return torch.cuda.Stream

    @property
    def Event(self):
        return torch.cuda.Event

    def stream(self, stream):
        return torch.cuda.stream(stream)

    def current_stream(self, device_index: int | None = None):
        return torch.cuda.current_stream(device_index)

    def default_stream(self, device_index: int | None = None):
        return torch.cuda.default_stream(device_index)


class _HostEvent:
    """A CPU 'event': work is done when issued, so recording and waiting are instant."""

    def __init__(self, **kwargs) -> None:
        pass

    def record(self, stream=None) -> None:
        pass

    def wait(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


class _HostStream:
    """A CPU 'stream': work runs in issue order on the calling thread."""

    def __init__(self, **kwargs) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def wait_stream(self, stream) -> None:
        pass

    def wait_event(self, event) -> None:
        pass

    def record_event(self, event=None):
        return event or _HostEvent()


class CpuAccelerator(Accelerator):
    """No device: tensors live in host memory; memory figures are this process's resident set."""

    _name, _backend = "cpu", "gloo"
    Stream, Event = _HostStream, _HostEvent

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def current_device(self) -> int:
        return 0

    def current_device_name(self) -> str:
        return "cpu"

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: int | None = None) -> None:
        pass

    def get_rng_state(self, device_index: int | None = None) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, new_state: torch.Tensor, device_index: int | None = None) -> None:
        torch.set_rng_state(new_state)

    def default_generator(self, device_index: int):
        return torch.default_generator

    def empty_cache(self) -> None:
        pass

    def memory_allocated(self, device_index: int | None = None) -> int:
        return _resident_bytes("VmRSS")

    def max_memory_allocated(self, device_index: int | None = None) -> int:
        return _resident_bytes("VmHWM")

    memory_reserved = memory_allocated
    max_memory_reserved = max_memory_allocated

    def reset_peak_memory_stats(self, device_index: int | None = None) -> None:
        # Linux: writing 5 to clear_refs resets the peak (VmHWM)
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")

    reset_max_memory_allocated = reset_peak_memory_stats

    def memory_stats(self, device_index: int | None = None) -> dict:
        return {"allocated_bytes.all.current": self.memory_allocated(),
                "allocated_bytes.all.peak": self.max_memory_allocated()}

    def total_memory(self, device_index: int | None = None) -> int:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def available_memory(self, device_index: int | None = None) -> int:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")

    def is_bf16_supported(self) -> bool:
        return True

    def is_fp16_supported(self) -> bool:
        return True

    def stream(self, stream):
        return contextlib.nullcontext()

    def current_stream(self, device_index: int | None = None):
        return _HostStream()

    default_stream = current_stream


def _resident_bytes(field: str) -> int:
    """This process's resident set (VmRSS) or its peak (VmHWM) from /proc, in bytes."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


_accelerator: Accelerator | None = None


def get_accelerator() -> Accelerator:
    """The process's accelerator: CUDA where torch sees a GPU (DS_ACCELERATOR=cpu forces the
    CPU, as in DeepSpeed), the CPU otherwise."""
    global _accelerator
    if _accelerator is None:
        wanted = os.environ.get("DS_ACCELERATOR")
        if wanted not in (None, "cpu", "cuda"):
            raise ValueError(f"DS_ACCELERATOR={wanted!r}: deepspeed_ext supports 'cpu' and 'cuda'")
        if wanted == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("DS_ACCELERATOR=cuda but torch sees no CUDA device")
        use_cuda = wanted == "cuda" or (wanted is None and torch.cuda.is_available())
        _accelerator = CudaAccelerator() if use_cuda else CpuAccelerator()
    return _accelerator


def set_accelerator(accelerator: Accelerator) -> None:
    global _accelerator
    _accelerator = accelerator


def is_current_accelerator_supported() -> bool:
    return get_accelerator().device_name() in ("cpu", "cuda")
