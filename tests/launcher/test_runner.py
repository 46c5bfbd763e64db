"""The `deepspeed` command on this machine: rank environment, .deepspeed_env, a failing rank
stopping the others, a two-node --no_ssh run on loopback, and multi-node command lines."""

import json
import os
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch

import deepspeed_ext
from deepspeed_ext.launcher import multinode
from tests.ranks import RankFailed, child_environment, free_port, run_ranks
from tests.runtime.test_checkpoint import SCHEDULE, dropout_model
from tests.runtime.test_engine import ADAM, batches, mse


def launched(name: str, *args) -> list[str]:
    """The launcher's script arguments that run tests/launcher/launched.py's `name` on each rank."""
    return ["--module", "tests.launcher.launched", name, *map(str, args)]


def deepspeed(args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "deepspeed_ext.launcher.runner", *args], cwd=cwd,
                          env=child_environment(), capture_output=True, text=True, timeout=timeout, check=False)


def test_ranks_get_their_environment_and_the_env_file(tmp_path):
    (tmp_path / ".deepspeed_env").write_text("# exported to every rank\nFROM_ENV_FILE=yes=really\n")
    port = str(free_port())
    done = deepspeed(["--num_gpus", "2", "--master_port", port, *launched("probe_environment", tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(records):
        assert record == {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_SIZE": "2",
                          "CROSS_RANK": "0", "CROSS_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                          "FROM_ENV_FILE": "yes=really", "CUDA_VISIBLE_DEVICES": "0,1",
                          "argv": [f"--local_rank={rank}", "probe_environment", str(tmp_path)]}


@pytest.mark.parametrize(("flags", "visible", "expected"), [
    (["--include", "localhost:1,3"], None, "1,3"),  # the slots --include picks, not the first two
    ([], "4,6", "4,6"),  # no selection flags: the GPUs CUDA_VISIBLE_DEVICES already names
])
def test_ranks_see_the_gpus_of_their_slots(tmp_path, flags, visible, expected):
    (tmp_path / "hostfile").write_text("localhost slots=4\n" if flags else "")
    env = {**child_environment(), **({"CUDA_VISIBLE_DEVICES": visible} if visible else {})}
    hostfile = ["--hostfile", str(tmp_path / "hostfile")] if flags else []
    done = subprocess.run([sys.executable, "-m", "deepspeed_ext.launcher.runner", *hostfile, *flags, "--master_port",
                           str(free_port()), *launched("probe_environment", tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["CUDA_VISIBLE_DEVICES"] for r in records] == [expected, expected]
    assert [r["LOCAL_RANK"] for r in records] == ["0", "1"]


def test_sigterm_to_the_launcher_stops_every_rank(tmp_path):
    launcher = subprocess.Popen([sys.executable, "-m", "deepspeed_ext.launcher.runner", "--num_gpus", "2",
                                 "--master_port", str(free_port()), *launched("write_pid_and_sleep", tmp_path)],
                                cwd=tmp_path, env=child_environment())
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"pid{r}").exists() for r in range(2)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
    for rank in range(2):
        pid = int((tmp_path / f"pid{rank}").read_text())
        time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_two_nodes_without_ssh_on_loopback(tmp_path):
    (tmp_path / "hostfile").write_text("node-a slots=1\nnode-b slots=1\n")
    port = str(free_port())
    nodes = [subprocess.Popen([sys.executable, "-m", "deepspeed_ext.launcher.runner", "--hostfile", "hostfile",
                               "--no_ssh", "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port",
                               port, *launched("all_reduce_ranks", tmp_path)], cwd=tmp_path, env=child_environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = [node.communicate(timeout=120) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-2000:]
    assert [(tmp_path / f"sum{r}").read_text() for r in range(2)] == ["3.0 2", "3.0 2"]


def test_multi_node_command_lines():
    args = Namespace(master_addr="node-a", master_port=29511, module=False, no_python=False, no_local_rank=False,
                     bind_cores_to_rank=False, enable_each_rank_log=None, exit_grace=120.0, launcher_args="", workdir="/work",
                     user_script="train.py", user_args=["--epochs", "2"], launcher="openmpi")
    resources = {"node-a": [0, 1], "node-b": [0, 1]}
    exports = multinode.exported_environment({"NCCL_DEBUG": "INFO", "HOME": "/root"}, {"FROM_FILE": "1"})
    assert exports == {"NCCL_DEBUG": "INFO", "FROM_FILE": "1"}
    pdsh = multinode.pdsh_command(args, resources, exports)
    assert pdsh[:5] == ["pdsh", "-S", "-f", "1024", "-w"] and pdsh[5] == "node-a,node-b"
    assert "export NCCL_DEBUG=INFO;" in pdsh[6] and "--node_rank=%n" in pdsh[6] and "cd /work;" in pdsh[6]
    assert pdsh[6].endswith("train.py --epochs 2")
    mpirun = multinode.mpi_command(args, resources, exports)
    assert mpirun[:5] == ["mpirun", "-n", "4", "-host", "node-a:2,node-b:2"]
    assert "MASTER_ADDR=node-a" in mpirun and mpirun[-3:] == ["train.py", "--epochs", "2"]
    srun = multinode.slurm_command(args, resources, exports)
    assert srun[:4] == ["srun", "-n", "4", "--nodelist"] and "MASTER_PORT=29511" in srun[5]


def test_each_rank_log_and_core_binding(tmp_path):
    done = deepspeed(["--num_gpus", "2", "--master_port", str(free_port()), "--enable_each_rank_log", "logs",
                      "--bind_cores_to_rank", *launched("print_rank_and_cores")], tmp_path)
    assert done.returncode == 0, done.stderr
    logs = [(tmp_path / "logs" / f"rank_{r}.log").read_text() for r in range(2)]
    assert logs[0].startswith("hello from 0") and logs[1].startswith("hello from 1")
    if len(os.sched_getaffinity(0)) >= 2:  # each rank got its own core
        assert logs[0].split("[")[1] != logs[1].split("[")[1]


def test_a_script_started_by_torchrun_works(tmp_path):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), "-m", "tests.launcher.launched", "all_reduce_ranks", str(tmp_path)],
                          cwd=tmp_path, env=child_environment(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [(tmp_path / f"sum{r}").read_text() for r in range(2)] == ["3.0 2", "3.0 2"]


def train_resumable(phase: str, folder: str) -> list:
    """Six steps; "crash" saves after step 3 and kills itself, "resume" continues from there."""
    engine = deepspeed_ext.initialize(model=dropout_model(0 if phase != "resume" else 5), config={
        "train_batch_size": 8, "optimizer": ADAM, "scheduler": SCHEDULE})[0]
    if phase == "resume":
        engine.load_checkpoint(folder)
    for step, (x, y) in enumerate(batches(6, 8)):
        if step < engine.global_steps:
            continue
        engine.backward(mse(engine, x, y))
        engine.step()
        if phase == "crash" and step == 2:
            engine.save_checkpoint(folder)
            os.kill(os.getpid(), signal.SIGKILL)
    return [p.detach().clone() for p in engine.module.parameters()]


def test_save_kill_load_resumes_like_an_uninterrupted_run(tmp_path):
    folder = str(tmp_path / "ckpt")
    (straight,) = run_ranks(train_resumable, 1, "straight", folder)
    with pytest.raises(RankFailed, match=f"exited with code {-signal.SIGKILL} without a result"):
        run_ranks(train_resumable, 1, "crash", folder)
    (resumed,) = run_ranks(train_resumable, 1, "resume", folder)
    assert all(torch.equal(a, b) for a, b in zip(resumed, straight))
