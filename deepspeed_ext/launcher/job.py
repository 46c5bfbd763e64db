"""Every process of one node's job, and how to stop them all.

A rank's own children (DataLoader workers, compile workers, anything a script starts) must
stop with it, even after the rank itself is gone, and even when they left its process
group. So each rank is started with JOB_VARIABLE=<job id> in its environment, which every
descendant inherits: on Linux the job is every process whose initial environment carries
that id (read from /proc), plus the ranks' process groups for whatever cleared its
environment. A guard process forked before the ranks start sweeps the job when the launcher
dies, however it dies (SIGKILL included): it waits on a pipe only the launcher holds open.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

JOB_VARIABLE = "DSEXT_LAUNCH_JOB"
TERM_GRACE_SECONDS = 3.0  # SIGTERM -> SIGKILL: the whole stop stays within 5 s
POLL_SECONDS = 0.05


def new_job_id() -> str:
    return uuid.uuid4().hex


def job_pids(job_id: str, variable: str = JOB_VARIABLE) -> set[int]:
    """The live processes whose environment has variable=job_id (empty where /proc is missing)."""
    marker = f"{variable}={job_id}".encode()
    found = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z" and marker in environ.split(b"\0"):
            found.add(int(entry.name))
    return found


def _signal_all(job_id: str, groups: list[int], sig: int) -> bool:
    """Send `sig` to the job's processes and groups; True when something was still there."""
    alive = False
    for group in groups:
        try:
            os.killpg(group, sig)
            alive = True
        except (ProcessLookupError, PermissionError):
            pass
    for pid in job_pids(job_id):
        try:
            os.kill(pid, sig)
            alive = True
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def stop_job(job_id: str, groups: list[int], reap=lambda: None) -> None:
    """SIGTERM everything of the job, SIGKILL what is left after TERM_GRACE_SECONDS, and
    return once nothing of it is left (`reap` collects the launcher's own exited children,
    which would otherwise count as alive)."""
    if not _signal_all(job_id, groups, signal.SIGTERM):
        return
    deadline = time.monotonic() + TERM_GRACE_SECONDS
    while time.monotonic() < deadline:
        reap()
        if not _signal_all(job_id, groups, 0):  # signal 0: only asks whether anything is there
            return
        time.sleep(POLL_SECONDS)
    for _ in range(100):  # a process may fork while being killed: sweep until nothing answers
        if not _signal_all(job_id, groups, signal.SIGKILL):
            return
        time.sleep(POLL_SECONDS)
        reap()


class Guard:
    """A forked process that stops the job once the launcher is gone. The launcher tells it
    each rank's process group through a pipe; the pipe's end (the launcher exiting or being
    killed) is the signal."""

    def __init__(self, job_id: str) -> None:
        read_end, self._write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the guard
            os.close(self._write_end)
            _guard_main(job_id, read_end)
        os.close(read_end)

    def watch(self, group: int) -> None:
        os.write(self._write_end, f"{group}\n".encode())

    def release(self) -> None:
        """The launcher is done: the guard makes its last sweep and exits."""
        if self._write_end is not None:
            os.close(self._write_end)
            self._write_end = None
            os.waitpid(self.pid, 0)


def _guard_main(job_id: str, read_end: int) -> None:
    # Ctrl-C and SIGTERM are the launcher's to handle; the guard acts when the launcher is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups, pending = [], b""
    try:
        while chunk := os.read(read_end, 4096):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            groups += [int(line) for line in lines if line]
        stop_job(job_id, groups)
    finally:
        os._exit(0)
