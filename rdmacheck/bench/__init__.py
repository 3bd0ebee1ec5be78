"""``rdmacheck bench``: nccl-tests-style collective sweeps over torch.distributed.

Modules: ``sizes`` (parse ``1K..1G``), ``collectives`` (one descriptor per op),
``plan`` (rows of a sweep), ``runner`` (the one runner), ``launch`` (``--nproc``
parent and watchdog), ``gate`` (plateau busbw gate, #wrong, memory guard),
``table`` (nccl-tests layout, CSV), ``hooks`` (per-size callbacks for other
modules, e.g. NIC counters around each size).  Nothing here imports torch at
module level.
"""

from .hooks import HOOKS, BenchHooks, RunInfo  # noqa: F401
from .plan import PlanRow  # noqa: F401
