"""The gated launcher: preflight gates + container gates, then docker compose (docs/launch.md)."""

from .gates import GATE_IDS as DOCKER_GATE_IDS, UNWAIVABLE

__all__ = ["DOCKER_GATE_IDS", "UNWAIVABLE"]
