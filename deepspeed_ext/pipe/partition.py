"""Cutting a list of layers into consecutive stages: `parts` is the list of num_stages + 1
boundaries, stage s holding layers parts[s]:parts[s + 1]."""

from __future__ import annotations


def partition_uniform(num_items: int, num_parts: int) -> list[int]:
    """As equal counts as possible, the first parts taking the remainder."""
    size, extra = divmod(num_items, num_parts)
    parts = [0]
    for part in range(num_parts):
        parts.append(parts[-1] + size + (1 if part < extra else 0))
    return parts


def partition_balanced(weights: list[float], num_parts: int) -> list[int]:
    """Consecutive parts minimising the heaviest part's weight (ties: the earliest such cut),
    every part non-empty when there are at least as many items as parts. Exact: the optimal
    bottleneck is found by dynamic programming over prefix sums (n² · parts, for layer counts)."""
    n = len(weights)
    if n <= num_parts:
        return partition_uniform(n, num_parts)
    prefix = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[j][i]: the lightest possible heaviest part cutting items[:i] into j parts
    best = [[inf] * (n + 1) for _ in range(num_parts + 1)]
    cut = [[0] * (n + 1) for _ in range(num_parts + 1)]
    best[0][0] = 0.0
    for j in range(1, num_parts + 1):
        for i in range(j, n - (num_parts - j) + 1):
            for k in range(j - 1, i):
                candidate = max(best[j - 1][k], prefix[i] - prefix[k])
                if candidate < best[j][i]:
                    best[j][i], cut[j][i] = candidate, k
    parts = [n]
    for j in range(num_parts, 0, -1):
        parts.append(cut[j][parts[-1]])
    return parts[::-1]
