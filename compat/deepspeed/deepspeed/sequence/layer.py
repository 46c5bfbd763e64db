from deepspeed_ext.sequence.layer import DistributedAttention, _SeqAllToAll, single_all_to_all

__all__ = ["DistributedAttention", "_SeqAllToAll", "single_all_to_all"]
