"""Hostfiles (`host slots=N` lines) and the --include / --exclude filters over them."""

from __future__ import annotations

import re
from pathlib import Path

HOST_LINE = re.compile(r"^(\S+)\s+slots=(\d+)\s*$")


def parse_hostfile(path: str | Path) -> dict[str, int] | None:
    """host -> slots, in file order; None when the file does not exist (a local run)."""
    path = Path(path)
    if not path.is_file():
        return None
    hosts: dict[str, int] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = HOST_LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: bad hostfile line '{raw.strip()}'; expected '<host> slots=<count>'")
        host, slots = match.group(1), int(match.group(2))
        if slots < 1:
            raise ValueError(f"{path}:{number}: host '{host}' has slots={slots}; a host needs at least one slot "
                             "(leave it out to give it none)")
        if host in hosts:
            raise ValueError(f"{path}:{number}: host '{host}' is listed twice")
        hosts[host] = slots
    if not hosts:
        raise ValueError(f"hostfile {path} lists no hosts; write one '<host> slots=<count>' line per host")
    return hosts


def filter_syntax_problems(text: str) -> list[str]:
    """What is malformed in an --include / --exclude value, before any hostfile is read."""
    if not text:
        return []
    problems = []
    for part in text.split("@"):
        host, colon, slot_text = part.partition(":")
        if not host:
            problems.append(f"'{text}' has an empty host name; write host[:slot,slot][@host...]")
        elif colon and not slot_text:
            problems.append(f"'{part}' ends with ':' but lists no slots; write {host} or {host}:0,1")
        elif colon and not all(item.isdigit() for item in slot_text.split(",")):
            problems.append(f"'{part}': slots must be non-negative integers separated by commas")
    return problems


def parse_filter(text: str, hosts: dict[str, list[int]], flag: str) -> dict[str, list[int]]:
    """`host[:slot,slot][@host...]` as host -> slots, checked against the available hosts."""
    chosen: dict[str, list[int]] = {}
    for part in text.split("@"):
        host, _, slot_text = part.partition(":")
        if host not in hosts:
            raise ValueError(f"{flag}: host '{host}' is not in the hostfile (hosts: {', '.join(hosts)})")
        if not slot_text:
            chosen[host] = list(hosts[host])
            continue
        slots = []
        for item in slot_text.split(","):
            if not item.isdigit() or int(item) not in hosts[host]:
                raise ValueError(f"{flag}: host '{host}' has no slot '{item}' (slots: "
                                 f"{', '.join(map(str, hosts[host]))})")
            slots.append(int(item))
        chosen[host] = sorted(set(chosen.get(host, []) + slots))
    return chosen


def select_resources(hosts: dict[str, int], include: str = "", exclude: str = "", num_nodes: int = -1,
                     num_gpus: int = -1) -> dict[str, list[int]]:
    """Which slots of which hosts run ranks: all, or those --include names, or all but those
    --exclude names, or the first --num_nodes hosts with their first --num_gpus slots."""
    available = {host: list(range(slots)) for host, slots in hosts.items()}
    if include and exclude:
        raise ValueError("--include and --exclude cannot be used together")
    if (include or exclude) and (num_nodes > 0 or num_gpus > 0):
        raise ValueError("--include / --exclude cannot be combined with --num_nodes / --num_gpus")
    if include:
        return parse_filter(include, available, "--include")
    if exclude:
        removed = parse_filter(exclude, available, "--exclude")
        kept = {host: [s for s in slots if s not in removed.get(host, [])] for host, slots in available.items()}
        return {host: slots for host, slots in kept.items() if slots}
    selected = dict(list(available.items())[:num_nodes]) if num_nodes > 0 else available
    if num_gpus > 0:
        selected = {host: slots[:num_gpus] for host, slots in selected.items()}
    return selected
