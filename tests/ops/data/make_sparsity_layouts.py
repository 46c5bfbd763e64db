"""Writes sparsity_layouts.json: block layouts made by DeepSpeed's own sparsity configs, which
tests/ops/test_sparse_attention.py compares ours against.

    python tests/ops/data/make_sparsity_layouts.py PATH/TO/deepspeed/ops/sparse_attention/sparsity_config.py

DeepSpeed removed sparse attention after 0.17.x; the stored file was made from 0.17.6's sdist
(`pip download --no-deps --no-binary :all: deepspeed==0.17.6`). Only that one module is
loaded (it needs torch alone), so DeepSpeed need not be installed or importable.
Random layouts (BigBird, Variable) are drawn after `random.seed(seed)`, as DeepSpeed draws from
the global `random` module; ours take the same seed as `seed=`.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

BI, UNI = "bidirectional", "unidirectional"
# (class, constructor options, sequence length); num_heads 3 and a seed are added to each.
CASES = [
    ("DenseSparsityConfig", {"block": 16}, 64),
    ("DenseSparsityConfig", {"block": 32, "different_layout_per_head": True}, 128),
    ("FixedSparsityConfig", {"block": 16}, 256),
    ("FixedSparsityConfig", {"block": 16, "num_local_blocks": 2, "num_global_blocks": 1, "attention": UNI}, 128),
    ("FixedSparsityConfig", {"block": 16, "num_local_blocks": 4, "num_global_blocks": 2,
                             "horizontal_global_attention": True}, 256),
    ("FixedSparsityConfig", {"block": 16, "different_layout_per_head": True, "num_local_blocks": 4,
                             "num_global_blocks": 1, "num_different_global_patterns": 3}, 256),
    ("FixedSparsityConfig", {"block": 16, "different_layout_per_head": True, "num_local_blocks": 4,
                             "num_global_blocks": 1, "num_different_global_patterns": 2, "attention": UNI}, 192),
    ("VariableSparsityConfig", {"block": 16}, 128),
    ("VariableSparsityConfig", {"block": 16, "num_random_blocks": 2, "local_window_blocks": [1, 2, 3],
                                "global_block_indices": [0, 5]}, 256),
    ("VariableSparsityConfig", {"block": 16, "different_layout_per_head": True, "num_random_blocks": 1,
                                "local_window_blocks": [2, 4], "global_block_indices": [1, 6],
                                "global_block_end_indices": [3, 8], "horizontal_global_attention": True}, 256),
    ("VariableSparsityConfig", {"block": 16, "num_random_blocks": 1, "local_window_blocks": [2],
                                "global_block_indices": [0], "attention": UNI}, 128),
    ("BigBirdSparsityConfig", {"block": 16}, 128),
    ("BigBirdSparsityConfig", {"block": 16, "different_layout_per_head": True, "num_random_blocks": 2,
                               "num_sliding_window_blocks": 5, "num_global_blocks": 2}, 256),
    ("BigBirdSparsityConfig", {"block": 32, "num_random_blocks": 1, "num_sliding_window_blocks": 3,
                               "num_global_blocks": 1, "attention": UNI}, 256),
    ("BigBirdSparsityConfig", {"block": 16, "different_layout_per_head": True, "attention": UNI}, 192),
    ("BSLongformerSparsityConfig", {"block": 16}, 128),
    ("BSLongformerSparsityConfig", {"block": 16, "num_sliding_window_blocks": 5, "global_block_indices": [0, 7]},
     256),
    ("BSLongformerSparsityConfig", {"block": 16, "global_block_indices": [2, 9], "global_block_end_indices": [4, 11],
                                    "attention": UNI}, 256),
    ("BSLongformerSparsityConfig", {"block": 32, "different_layout_per_head": True}, 256),
    ("LocalSlidingWindowSparsityConfig", {"block": 16}, 128),
    ("LocalSlidingWindowSparsityConfig", {"block": 16, "num_sliding_window_blocks": 5, "attention": BI}, 256),
    ("LocalSlidingWindowSparsityConfig", {"block": 32, "num_sliding_window_blocks": 2, "attention": UNI}, 256),
]
HEADS = 3


def pack(layout) -> list[list[str]]:
    """Each head as rows of '0' / '1' characters, so a diff of the file shows the pattern."""
    return [["".join(str(int(v)) for v in row) for row in head.tolist()] for head in layout]


def main(path: str) -> None:
    spec = importlib.util.spec_from_file_location("deepspeed_sparsity_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cases = []
    for seed, (name, options, seq_len) in enumerate(CASES):
        random.seed(seed)
        layout = getattr(module, name)(num_heads=HEADS, **options).make_layout(seq_len)
        cases.append({"class": name, "options": {"num_heads": HEADS, **options}, "seq_len": seq_len, "seed": seed,
                      "layout": pack(layout)})
    out = Path(__file__).with_name("sparsity_layouts.json")
    out.write_text(json.dumps({"made_by": f"{Path(__file__).name} from {path}", "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} layouts to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
