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

from deepspeed_ext.launcher import multinode
from tests.ranks import LAUNCH_VARS, free_port

ENV_PROBE = """
import json, os, sys
keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "CROSS_RANK", "CROSS_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "FROM_ENV_FILE"]
record = {k: os.environ.get(k) for k in keys}
record["argv"] = sys.argv[1:]
open(os.path.join(sys.argv[-1], "rank%s.json" % os.environ["RANK"]), "w").write(json.dumps(record))
"""


def deepspeed(args, cwd, env=None, timeout=120):
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return subprocess.run([sys.executable, "-m", "deepspeed_ext.launcher.runner", *args], cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False)


def test_ranks_get_their_environment_and_the_env_file(tmp_path):
    (tmp_path / "probe.py").write_text(ENV_PROBE)
    (tmp_path / ".deepspeed_env").write_text("# exported to every rank\nFROM_ENV_FILE=yes=really\n")
    port = str(free_port())
    done = deepspeed(["--num_gpus", "2", "--master_port", port, "probe.py", str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(records):
        assert record == {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_SIZE": "2",
                          "CROSS_RANK": "0", "CROSS_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                          "FROM_ENV_FILE": "yes=really", "argv": [f"--local_rank={rank}", str(tmp_path)]}


def test_a_failing_rank_stops_the_others(tmp_path):
    (tmp_path / "fail.py").write_text(
        "import os, sys, time\n"
        "open('pid%s' % os.environ['RANK'], 'w').write(str(os.getpid()))\n"
        "if os.environ['RANK'] == '1':\n    time.sleep(1); sys.exit(3)\n"
        "time.sleep(120)\n")
    started = time.monotonic()
    done = deepspeed(["--num_gpus", "2", "--master_port", str(free_port()), "fail.py"], tmp_path)
    assert done.returncode == 3
    assert time.monotonic() - started < 30
    survivor = int((tmp_path / "pid0").read_text())
    time.sleep(0.2)
    try:
        os.kill(survivor, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_sigterm_to_the_launcher_stops_every_rank(tmp_path):
    (tmp_path / "sleep.py").write_text("import os, time\nopen('pid%s' % os.environ['RANK'], 'w').write("
                                       "str(os.getpid()))\ntime.sleep(120)\n")
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    launcher = subprocess.Popen([sys.executable, "-m", "deepspeed_ext.launcher.runner", "--num_gpus", "2",
                                 "--master_port", str(free_port()), "sleep.py"], cwd=tmp_path, env=base)
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
    (tmp_path / "allreduce.py").write_text(
        "import torch, torch.distributed as dist, deepspeed_ext\n"
        "deepspeed_ext.init_distributed(verbose=False)\n"
        "t = torch.tensor([float(dist.get_rank() + 1)]); dist.all_reduce(t)\n"
        "print('SUM', t.item(), dist.get_world_size())\n")
    port = str(free_port())
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    nodes = [subprocess.Popen([sys.executable, "-m", "deepspeed_ext.launcher.runner", "--hostfile", "hostfile",
                               "--no_ssh", "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port",
                               port, "allreduce.py"], cwd=tmp_path, env=base, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = [node.communicate(timeout=120) for node in nodes]
    for node, (out, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-2000:]
        assert "SUM 3.0 2" in out


def test_launcher_errors_are_clear(tmp_path):
    (tmp_path / "hostfile").write_text("node-a slots=2\n")
    done = deepspeed(["--hostfile", "hostfile", "--include", "node-z", "x.py"], tmp_path)
    assert done.returncode != 0 and "--include: host 'node-z' is not in the hostfile" in done.stderr
    done = deepspeed(["--hostfile", "missing", "x.py"], tmp_path)
    assert "hostfile missing not found" in done.stderr
    (tmp_path / ".deepspeed_env").write_text("NOT A PAIR\n")
    done = deepspeed(["--num_gpus", "1", "x.py"], tmp_path)
    assert ".deepspeed_env:1: expected KEY=VALUE" in done.stderr


def test_multi_node_command_lines():
    args = Namespace(master_addr="node-a", master_port=29511, module=False, no_python=False, no_local_rank=False,
                     bind_cores_to_rank=False, enable_each_rank_log=None, launcher_args="", workdir="/work",
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
    (tmp_path / "hello.py").write_text("import os\nprint('hello from', os.environ['RANK'], sorted(os.sched_getaffinity(0)))\n")
    done = deepspeed(["--num_gpus", "2", "--master_port", str(free_port()), "--enable_each_rank_log", "logs",
                      "--bind_cores_to_rank", "hello.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    logs = [(tmp_path / "logs" / f"rank_{r}.log").read_text() for r in range(2)]
    assert logs[0].startswith("hello from 0") and logs[1].startswith("hello from 1")
    if len(os.sched_getaffinity(0)) >= 2:  # each rank got its own core
        assert logs[0].split("[")[1] != logs[1].split("[")[1]


def test_a_script_started_by_torchrun_works(tmp_path):
    (tmp_path / "allreduce.py").write_text(
        "import torch, torch.distributed as dist, deepspeed_ext\n"
        "deepspeed_ext.init_distributed(verbose=False)\n"
        "t = torch.tensor([1.0]); dist.all_reduce(t)\n"
        "open('sum%d' % dist.get_rank(), 'w').write(str(t.item()))\n")
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), "allreduce.py"], cwd=tmp_path, env=base, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [(tmp_path / f"sum{r}").read_text() for r in range(2)] == ["2.0", "2.0"]


RESUMABLE = """
import json, sys, torch
sys.path.insert(0, {root!r})
import deepspeed_ext as deepspeed
from tests.runtime.test_checkpoint import dropout_model, SCHEDULE
from tests.runtime.test_engine import ADAM, batches, mse
phase, folder = sys.argv[1], sys.argv[2]
engine = deepspeed.initialize(model=dropout_model(0 if phase != "resume" else 5), config={{
    "train_batch_size": 8, "optimizer": ADAM, "scheduler": SCHEDULE}})[0]
data = batches(6, 8)
if phase == "resume":
    engine.load_checkpoint(folder)
for step, (x, y) in enumerate(data):
    if step < engine.global_steps:
        continue
    engine.backward(mse(engine, x, y))
    engine.step()
    if phase == "crash" and step == 2:
        engine.save_checkpoint(folder)
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
print(json.dumps([p.detach().flatten().tolist() for p in engine.module.parameters()]))
"""


def test_save_kill_load_resumes_like_an_uninterrupted_run(tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}

    def run(phase):
        return subprocess.run([sys.executable, "-c", RESUMABLE.format(root=root), phase, str(tmp_path / "ckpt")],
                              env=base, capture_output=True, text=True, timeout=120, check=False)

    straight = run("straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    crashed = run("crash")
    assert crashed.returncode == -signal.SIGKILL
    resumed = run("resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.splitlines()[-1]) == json.loads(straight.stdout.splitlines()[-1])
