"""A failing rank stops the whole job through the real `deepspeed` command: a rank raising,
exiting with an error, being SIGKILLed, exiting 0 while the other waits, and the launcher
itself being SIGKILLed. Each case checks the exit code, that the stop came within the
launcher's 5 s, and that no process of the job (ranks and what they started, inside their
process group or not) is left."""

import signal
import subprocess
import sys
import time
import uuid

import pytest

from deepspeed_ext.launcher import launch
from deepspeed_ext.launcher.job import job_pids
from tests.launcher.test_runner import launched
from tests.ranks import child_environment, free_port

MARKER = "DSEXT_TEST_JOB"  # inherited by every process the launcher starts, and theirs
STOP_SECONDS = 5.0
SLACK_SECONDS = 3.0  # the launcher's poll, python start-up of the test's own process checks


def start_launcher(folder, *flags, script=("sleep_with_children",)):
    marker = uuid.uuid4().hex
    env = {**child_environment(), MARKER: marker}
    command = [sys.executable, "-m", "deepspeed_ext.launcher.runner", "--num_gpus", "2", "--master_port",
               str(free_port()), *flags, *launched(script[0], folder, *script[1:])]
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True), marker


def wait_for_files(folder, names, timeout=120):
    deadline = time.monotonic() + timeout
    while not all((folder / name).exists() for name in names):
        assert time.monotonic() < deadline, f"the ranks did not write {names}"
        time.sleep(0.05)


def assert_nothing_left(folder, marker):
    pids = {int(pid) for rank in range(2) if (folder / f"children{rank}").exists()
            for pid in (folder / f"children{rank}").read_text().split()}
    assert pids, "the ranks should have started children"
    deadline = time.monotonic() + 1.0  # a SIGKILLed process takes a moment to leave /proc
    while job_pids(marker, MARKER) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job_pids(marker, MARKER) == set()


@pytest.mark.parametrize(("how", "code"), [("raise", 1), ("exit", 3), ("sigkill", 128 + signal.SIGKILL)])
def test_a_failing_rank_stops_the_job(tmp_path, how, code):
    launcher, marker = start_launcher(tmp_path, script=("fail_in_training", how))
    _, err = launcher.communicate(timeout=120)
    ended = time.time()
    assert launcher.returncode == code, err[-3000:]
    assert ended - float((tmp_path / "failed_at").read_text()) < STOP_SECONDS + SLACK_SECONDS
    assert "rank 1 (pid" in err and "stopping the job" in err
    if how == "raise":
        assert "rank 1 fails on purpose" in err
    assert_nothing_left(tmp_path, marker)


def test_a_rank_ending_early_with_0_stops_the_rest_after_the_grace(tmp_path):
    launcher, marker = start_launcher(tmp_path, "--exit_grace", "1", script=("rank1_exits_early",))
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == launch.EARLY_EXIT_CODE, err[-3000:]
    assert "ranks 1 exited with 0 but ranks 0 were still running 1 s later" in err
    assert_nothing_left(tmp_path, marker)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_a_signal_to_the_launcher_takes_the_job_with_it(tmp_path, sig, code):
    """SIGTERM: the launcher stops the job itself; SIGKILL: its guard process does."""
    launcher, marker = start_launcher(tmp_path)
    wait_for_files(tmp_path, ["pid0", "pid1", "children0", "children1"])
    launcher.send_signal(sig)
    launcher.communicate(timeout=30)
    assert launcher.returncode == code
    stopped = time.monotonic()
    while job_pids(marker, MARKER) and time.monotonic() - stopped < STOP_SECONDS + SLACK_SECONDS:
        time.sleep(0.05)
    assert_nothing_left(tmp_path, marker)


def test_a_finished_job_leaves_nothing_behind(tmp_path):
    """Ranks that end with 0 but leave children running: the launcher's last sweep."""
    launcher, marker = start_launcher(tmp_path, script=("start_children",))
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, err[-3000:]
    assert_nothing_left(tmp_path, marker)


def run_launcher(args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "deepspeed_ext.launcher.runner", *args], cwd=cwd,
                          env=env or child_environment(), capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("args", "message"), [
    (["--num_gpus", "0", "x.py"], "--num_gpus must be a positive count"),
    (["--num_gpus", "-2", "x.py"], "--num_gpus must be a positive count"),
    (["--num_nodes", "0", "x.py"], "--num_nodes must be a positive count"),
    (["--master_port", "70000", "x.py"], "--master_port must be between 1 and 65535, got 70000"),
    (["--master_port", "0", "x.py"], "--master_port must be between 1 and 65535"),
    (["-i", "localhost:", "x.py"], "--include: 'localhost:' ends with ':' but lists no slots"),
    (["-e", "@localhost", "x.py"], "--exclude: '@localhost' has an empty host name"),
    (["-i", "localhost:a", "x.py"], "--include: 'localhost:a': slots must be non-negative integers"),
    (["--node_rank", "-3", "x.py"], "--node_rank must be 0 or more"),
    (["--no_ssh", "x.py"], "--no_ssh needs --node_rank"),
    (["--exit_grace", "-1", "x.py"], "--exit_grace must be 0 or more seconds"),
    (["--launcher_args", "'unclosed", "x.py"], "--launcher_args: No closing quotation"),
    (["--num_gpus", "1", "missing.py"], "script missing.py not found"),
    (["--nmu_gpus", "1", "x.py"], "unrecognized arguments"),  # a typo in a flag (argparse's own error)
    (["--launcher", "ssh", "x.py"], "argument --launcher: invalid choice"),
    (["--hostfile", "hostfile", "--include", "node-z", "x.py"], "--include: host 'node-z' is not in the hostfile"),
    (["--hostfile", "missing", "x.py"], "hostfile missing not found"),
    (["--hostfile", "zero_slots", "x.py"], "zero_slots:2: host 'node-b' has slots=0"),
    (["--hostfile", "hostfile", "--no_ssh", "--node_rank", "4", "x.py"], "--node_rank 4: --no_ssh needs a node rank"),
])
def test_bad_launcher_input_is_refused_before_anything_starts(tmp_path, args, message):
    (tmp_path / "x.py").write_text("open('started', 'w')\n")
    (tmp_path / "hostfile").write_text("node-a slots=2\n")
    (tmp_path / "zero_slots").write_text("node-a slots=2\nnode-b slots=0\n")
    done = run_launcher(args, tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "started").exists()


def test_a_bad_env_file_is_refused(tmp_path):
    (tmp_path / "x.py").write_text("")
    (tmp_path / ".deepspeed_env").write_text("NOT A PAIR\n")
    done = run_launcher(["--num_gpus", "1", "x.py"], tmp_path)
    assert done.returncode == 2 and ".deepspeed_env:1: expected KEY=VALUE" in done.stderr


def test_help_and_argument_checks_do_not_import_torch(tmp_path):
    probe = ("import sys\nfrom deepspeed_ext.launcher import runner\n"
             "try:\n    runner.parse_args(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules)")
    for args in (["--help"], ["--num_gpus", "0", "x.py"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], cwd=tmp_path, env=child_environment(),
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.stdout.strip().splitlines()[-1] == "False", done.stderr


def test_a_failing_rank_on_another_node_stops_both_nodes(tmp_path):
    """--no_ssh on each node: node 1's rank raises; its launcher stops it, and node 0's rank,
    whose all-reduce loses its peer, fails too and its launcher stops the rest."""
    (tmp_path / "hostfile").write_text("node-a slots=1\nnode-b slots=1\n")
    marker, port = uuid.uuid4().hex, str(free_port())
    env = {**child_environment(), MARKER: marker}
    nodes = [subprocess.Popen([sys.executable, "-m", "deepspeed_ext.launcher.runner", "--hostfile", "hostfile",
                               "--no_ssh", "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", port,
                               *launched("fail_in_training", tmp_path, "raise")], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    errors = [node.communicate(timeout=120)[1] for node in nodes]
    assert nodes[1].returncode == 1 and "rank 1 fails on purpose" in errors[1]
    assert nodes[0].returncode != 0 and "rank 0 (pid" in errors[0]
    assert_nothing_left(tmp_path, marker)
