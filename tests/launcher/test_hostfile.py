"""Hostfile parsing and --include / --exclude / --num_nodes / --num_gpus selection."""

import pytest

from deepspeed_ext.launcher.hostfile import parse_hostfile, select_resources

HOSTS = {"worker-0": 4, "worker-1": 4, "worker-2": 2}


def write(tmp_path, text):
    path = tmp_path / "hostfile"
    path.write_text(text)
    return path


def test_parses_hosts_comments_and_blank_lines(tmp_path):
    path = write(tmp_path, "# cluster\nworker-0 slots=4\n\nworker-1 slots=2  # the small one\n")
    assert parse_hostfile(path) == {"worker-0": 4, "worker-1": 2}
    assert parse_hostfile(tmp_path / "missing") is None


@pytest.mark.parametrize("text, message", [
    ("worker-0 slots=4\nworker-0 slots=2\n", "hostfile:2: host 'worker-0' is listed twice"),
    ("worker-0 slot=4\n", "hostfile:1: bad hostfile line 'worker-0 slot=4'"),
    ("worker-0\n", "bad hostfile line"),
    ("# nothing\n\n", "lists no hosts"),
])
def test_hostfile_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        parse_hostfile(write(tmp_path, text))


def test_selection():
    assert select_resources(HOSTS) == {"worker-0": [0, 1, 2, 3], "worker-1": [0, 1, 2, 3], "worker-2": [0, 1]}
    assert select_resources(HOSTS, include="worker-1:0,2@worker-2") == {"worker-1": [0, 2], "worker-2": [0, 1]}
    assert select_resources(HOSTS, exclude="worker-0@worker-1:1") == {"worker-1": [0, 2, 3], "worker-2": [0, 1]}
    assert select_resources(HOSTS, num_nodes=2, num_gpus=1) == {"worker-0": [0], "worker-1": [0]}


@pytest.mark.parametrize("kwargs, message", [
    ({"include": "worker-9"}, "--include: host 'worker-9' is not in the hostfile"),
    ({"exclude": "worker-2:5"}, "--exclude: host 'worker-2' has no slot '5'"),
    ({"include": "worker-0", "exclude": "worker-1"}, "cannot be used together"),
    ({"include": "worker-0", "num_gpus": 1}, "cannot be combined with --num_nodes / --num_gpus"),
])
def test_selection_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_resources(HOSTS, **kwargs)
