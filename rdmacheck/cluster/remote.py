"""What runs on the Ray nodes.  Plain functions and classes: the driver wraps
them with ``ray.remote`` at run time, so importing this module needs no ray.

Every node must be able to ``import rdmacheck`` (it is in the node image; the
CI cluster gets it through PYTHONPATH).
"""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any


def node_identity() -> dict[str, Any]:
    ident: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        ctx = ray.get_runtime_context()
        ident["node_id"] = ctx.get_node_id()
        ident["ip"] = ray.util.get_node_ip_address()
        ident["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
    except Exception:  # run outside Ray (unit tests call these functions directly)
        pass
    return ident


def preflight_task(config, only: list[str] | None, label: str, ray_node: dict[str, Any]) -> dict[str, Any]:
    """Run this node's preflight with the driver's config; return the evidence dict.

    The config (the .env and profile the driver loaded) travels with the task:
    one cluster, one set of expectations, whatever file the node happens to have.
    """
    from rdmacheck import preflight
    from rdmacheck.evidence.model import Result, Status
    from rdmacheck.preflight.gather import gather
    from rdmacheck.preflight.judge import evidence_for
    from rdmacheck.preflight.root import HostRoot

    try:
        done = preflight.run("/", config=config, only=set(only) if only else None)
        ev = done.evidence()
    except Exception as e:  # UsageError on a node (e.g. a profile it cannot read): a failed gate, named
        results = [Result("cluster.preflight", Status.FAIL, observed=f"{type(e).__name__}: {e}",
                          remedy="fix the node's setup so 'rdmacheck preflight' runs there")]
        ev = evidence_for(gather(HostRoot("/"), config), config, results)
    ev.host = label
    ev.context["ray"] = dict(ray_node, **node_identity())
    return ev.to_dict()


class BenchActor:
    """One rank of the cluster bench: one per GPU (NCCL) or one per node (gloo).

    ``run`` sets the variables torchrun would set and calls the same runner as
    ``rdmacheck bench`` (rdmacheck.bench.runner.run_rank); rank 0 writes the
    bench evidence to a temporary file on its node and sends it back, so the
    driver never needs a shared filesystem.
    """

    def __init__(self, label: str, env: dict[str, str] | None = None) -> None:
        self.label = label
        os.environ.update(env or {})

    def info(self) -> dict[str, Any]:
        return dict(node_identity(), label=self.label)

    def prepare(self) -> dict[str, Any]:
        """Import torch now, under the actor-start bound: a cold import on a loaded node
        can take tens of seconds and must not eat the rendezvous watchdog's time."""
        import torch
        import torch.distributed  # noqa: F401

        return dict(node_identity(), label=self.label, torch=torch.__version__,
                    cuda=bool(torch.cuda.is_available()), gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0)

    def free_port(self) -> int:
        # bound on every address: the rendezvous is reached over the node's
        # fabric address, not loopback
        with socket.socket() as s:
            s.bind(("", 0))
            return int(s.getsockname()[1])

    def run(self, opts_json: str, rank: int, world: int, master_addr: str, master_port: int,
            local_world: int = 1) -> dict[str, Any]:
        from ..bench.runner import BenchOptions, run_rank

        opts = BenchOptions.from_json(opts_json)
        opts.progress = False
        fd, path = tempfile.mkstemp(prefix=f"rdmacheck-cluster-rank{rank}-", suffix=".json")
        os.close(fd)
        os.unlink(path)
        opts.json_path = path if rank == 0 else None
        os.environ.update({
            "RANK": str(rank), "WORLD_SIZE": str(world),
            # Ray sets CUDA_VISIBLE_DEVICES to this actor's one GPU: it is device 0 here
            "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": str(local_world),
            "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
        })
        # keep what the runner says on stderr (its one-line errors) to send back with the result;
        # the node's own log still gets it
        import contextlib
        import io
        import sys

        class _Tee(io.TextIOBase):
            def __init__(self, other) -> None:
                self.other, self.buf = other, io.StringIO()

            def write(self, text: str) -> int:
                self.buf.write(text)
                try:
                    return self.other.write(text)
                except Exception:
                    return len(text)

            def flush(self) -> None:
                try:
                    self.other.flush()
                except Exception:
                    pass

        tee = _Tee(sys.stderr)
        with contextlib.redirect_stderr(tee):
            rc = run_rank(opts)
        said = [ln.strip() for ln in tee.buf.getvalue().replace("\r", "\n").splitlines() if ln.strip()]
        try:  # a failed run skips the runner's own destroy; the next group needs a clean slate
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass
        evidence = None
        if rank == 0:
            try:
                with open(path, encoding="utf-8") as f:
                    import json

                    evidence = json.load(f)
                os.unlink(path)
            except OSError:
                pass
        return {"rc": rc, "rank": rank, "label": self.label, "evidence": evidence, "stderr_tail": said[-3:]}
