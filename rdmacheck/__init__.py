"""rdmacheck: pre-flight diagnostics and RDMA/NCCL benchmarks for multi-node GPU clusters."""

__version__ = "0.1.0"
