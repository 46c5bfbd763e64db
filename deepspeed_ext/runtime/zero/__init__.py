"""ZeRO stages 1-3: sharded optimizer states, gradients and (stage 3) parameters."""
