"""Configuration: the .env that compose uses, plus the profile of expectations.

Precedence for the variables below follows docker compose: a variable set in
the process environment wins over the same key in the .env file.  Each value's
source is recorded so evidence says where a setting came from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .envfile import EnvFileError, load_env_file, parse_env_text
from .profile import Profile, build_profile, load_profile, parse_bandwidth, parse_bytes

# The variables the gates read.  Others in the .env are kept but not judged.
ENV_KEYS = (
    "NCCL_IB_HCA",
    "NCCL_SOCKET_IFNAME",
    "GLOO_SOCKET_IFNAME",
    "NCCL_IB_GID_INDEX",
    "NCCL_IB_ADDR_FAMILY",
    "NCCL_IB_ADDR_RANGE",
    "NCCL_IB_ROCE_VERSION_NUM",
    "NCCL_IB_TC",
    "NCCL_IB_SL",
    "NCCL_IB_TIMEOUT",
    "NCCL_IB_RETRY_CNT",
    "NCCL_IB_DISABLE",
    "NCCL_NET_GDR_LEVEL",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RAY_ADDRESS",
    "CUDA_VISIBLE_DEVICES",
    "GPU_MEMORY_UTILIZATION",
    # head or worker: compose's RAY_MODE, or RDMACHECK_ROLE outside compose
    "RAY_MODE",
    "RDMACHECK_ROLE",
)

DEFAULT_ENV_FILE = Path("docker/.env")

__all__ = [
    "Config",
    "ENV_KEYS",
    "EnvFileError",
    "Profile",
    "build_profile",
    "load_config",
    "load_env_file",
    "load_profile",
    "parse_bandwidth",
    "parse_bytes",
    "parse_env_text",
]


@dataclasses.dataclass
class Config:
    env: dict[str, str]
    env_sources: dict[str, str]
    env_file: str | None
    profile: Profile

    def get(self, key: str, default: str | None = None) -> str | None:
        v = self.env.get(key)
        return default if v is None or v == "" else v

    def to_dict(self) -> dict[str, Any]:
        return {
            "env_file": self.env_file,
            "env": {k: self.env[k] for k in sorted(self.env)},
            "env_sources": self.env_sources,
            "profile": self.profile.to_dict(),
        }


def load_config(
    env_file: str | None,
    profile_file: str | None = None,
    overrides: list[str] | None = None,
    process_env: dict[str, str] | None = None,
    recorded_file_env: dict[str, str] | None = None,
) -> Config:
    """Build the effective configuration.

    ``env_file`` None means: use ``docker/.env`` when it exists, else none.
    ``process_env`` is the environment to overlay (live os.environ, or the
    one a snapshot recorded).
    """
    file_env: dict[str, str] = {}
    used: str | None = None
    if env_file:
        file_env = load_env_file(env_file)
        used = str(env_file)
    elif recorded_file_env is not None:  # a snapshot's own .env values (HostRoot.recorded_dotenv)
        file_env = dict(recorded_file_env)
        used = "(the .env recorded in the snapshot)"
    elif DEFAULT_ENV_FILE.is_file():
        file_env = load_env_file(DEFAULT_ENV_FILE)
        used = str(DEFAULT_ENV_FILE)
    env = dict(file_env)
    sources = {k: "env-file" for k in file_env}
    for k in ENV_KEYS:
        if process_env and k in process_env:
            env[k] = process_env[k]
            sources[k] = "process"
    return Config(env=env, env_sources=sources, env_file=used, profile=load_profile(profile_file, overrides))
