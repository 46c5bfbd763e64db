from deepspeed_ext.utils.groups import (
    _get_data_parallel_group,
    _get_data_parallel_rank,
    _get_data_parallel_world_size,
    _get_model_parallel_world_size,
    _get_sequence_data_parallel_group,
    _get_sequence_parallel_group,
    _get_sequence_parallel_rank,
    _get_sequence_parallel_world_size,
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    initialize_sequence_parallel,
)

__all__ = ["_get_data_parallel_group", "_get_data_parallel_rank", "_get_data_parallel_world_size",
           "_get_model_parallel_world_size", "_get_sequence_data_parallel_group", "_get_sequence_parallel_group",
           "_get_sequence_parallel_rank", "_get_sequence_parallel_world_size", "get_tensor_model_parallel_rank",
           "get_tensor_model_parallel_world_size", "initialize_sequence_parallel"]
