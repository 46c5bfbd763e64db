"""NVMe tools: ds_io, the async I/O throughput benchmark."""
