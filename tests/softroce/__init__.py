"""Soft-RoCE guest harness: real rdma_rxe devices inside a QEMU guest (see docs/softroce.md)."""
