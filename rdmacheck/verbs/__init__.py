"""RDMA datapath probes on pyverbs: RC queue pairs set up as NCCL's net_ib sets them up, RDMA WRITE
bandwidth and latency with content verification, a loopback check, and a bounded TCP side channel
for a two-node probe.

``engine`` holds the verbs side (``Endpoint``, ``connect``, ``write_bandwidth``, ``write_latency``,
``loopback_check``); ``wire`` the side channel (``serve``, ``request``, ``Channel``) and the
two-process flow (``serve_link``, ``run_link``); ``perftest`` runs ``ib_write_bw``/``ib_write_lat``
for ground truth.  Every wait is bounded by a wall-clock deadline; failures are typed values.
"""
