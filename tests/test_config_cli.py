"""Configuration (.env with compose semantics, TOML profile) and the CLI's input errors (exit 2, one line)."""

from __future__ import annotations

import pytest

from rdmacheck.config import load_config, parse_env_text
from rdmacheck.config.envfile import EnvFileError
from rdmacheck.config.profile import build_profile, parse_bandwidth, parse_bytes
from rdmacheck.util.errors import UsageError
from conftest import REPO, run_cli


def test_env_compose_semantics():
    env = parse_env_text(
        "# comment\n\nexport A=1\nB = two words  # note\nC='lit $x # not comment'\nD=\"a\\nb \\\"q\\\"\"\nE=\nF=x#y\n")
    assert env == {"A": "1", "B": "two words", "C": "lit $x # not comment", "D": 'a\nb "q"', "E": "", "F": "x#y"}


@pytest.mark.parametrize("text,line,word", [
    ("A=1\nNOEQUALS\n", 2, "missing '='"),
    ("A=`cmd`\n", 1, "backtick"),
    ("A='open\n", 1, "unterminated"),
    ("A=\"x\"junk\n", 1, "after the closing quote"),
    ("1BAD=x\n", 1, "not a valid variable name"),
])
def test_env_errors_name_the_line(text, line, word):
    with pytest.raises(EnvFileError) as e:
        parse_env_text(text, "docker/.env")
    assert f"line {line}" in str(e.value) and word in str(e.value)


def test_process_env_wins_like_compose(tmp_path):
    f = tmp_path / ".env"
    f.write_text("NCCL_IB_HCA=mlx5_0\nMASTER_PORT=8000\n")
    cfg = load_config(str(f), None, [], {"NCCL_IB_HCA": "roceP2p1s0f0"})
    assert cfg.env["NCCL_IB_HCA"] == "roceP2p1s0f0" and cfg.env_sources["NCCL_IB_HCA"] == "process"
    assert cfg.env["MASTER_PORT"] == "8000" and cfg.env_sources["MASTER_PORT"] == "env-file"


def test_profile_defaults_match_reference_and_overrides(tmp_path):
    p = build_profile()
    assert (p.mtu, p.subnet, p.memlock, p.stack_min, p.min_busbw, p.gpus_per_node) == \
        (9000, "192.168.100.0/24", "unlimited", 64 << 20, 12.0, 1)
    f = tmp_path / "p.toml"
    f.write_text('mtu = 4200\nsubnet = "10.1.0.0/16"\nstack_min = "32MiB"\n[expect]\nmin_busbw = "40GB/s"\n')
    cfg = load_config(None, str(f), ["mtu=1500"], {})
    assert cfg.profile.mtu == 1500 and cfg.profile.subnet == "10.1.0.0/16"
    assert cfg.profile.stack_min == 32 << 20 and cfg.profile.min_busbw == 40.0


def test_size_and_bandwidth_parsers():
    assert parse_bytes("64MiB") == parse_bytes("64M") == 64 << 20 and parse_bytes("1G") == 1 << 30
    assert parse_bandwidth("12GB/s") == parse_bandwidth("12") == 12.0
    for bad in ("12 parsecs", "-1", ""):
        with pytest.raises(UsageError):
            parse_bandwidth(bad)


@pytest.mark.parametrize("args,needle", [
    (["preflight", "--expect", "mtu=abc"], "not a whole number"),
    (["preflight", "--expect", "nosuchkey=1"], "unknown key"),
    (["preflight", "--expect", "subnet=999.1.1.1/8"], "not a subnet"),
    (["preflight", "--root", "/nonexistent/dir"], "not a folder"),
    (["preflight", "--env", "/nonexistent/.env"], "not found"),
    (["preflight", "--only", "rdma.bogus"], "unknown gate id"),
    (["preflight", "--frobnicate"], "unrecognized arguments"),
    (["nosuchcommand"], "invalid choice"),
])
def test_cli_input_errors_exit_2_one_line(args, needle):
    p = run_cli(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_broken_env_file_exit_2_names_line(tmp_path):
    f = tmp_path / ".env"
    f.write_text("NCCL_IB_HCA=roceP2p1s0f0\nNCCL_IB_TC 106\n")
    p = run_cli("preflight", "--env", str(f))
    assert p.returncode == 2 and "line 2" in p.stderr and "missing '='" in p.stderr and "Traceback" not in p.stderr


def test_bad_profile_toml_exit_2(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("mtu = = 9000\n")
    p = run_cli("preflight", "--profile", str(f))
    assert p.returncode == 2 and "not valid TOML" in p.stderr


def test_help_teaches():
    p = run_cli("preflight", "--help")
    assert p.returncode == 0
    for word in ("--env", "--root", "--expect", "--json", "exit codes", "examples"):
        assert word in p.stdout
    top = run_cli("--help")
    assert "preflight" in top.stdout and "snapshot" in top.stdout


def test_env_example_parses_if_present():
    ex = REPO / "docker" / ".env.example"
    if not ex.exists():
        pytest.skip("docker/.env.example not written yet")
    env = parse_env_text(ex.read_text(), str(ex))
    assert env["NCCL_IB_HCA"] == "roceP2p1s0f0" and env["NCCL_NET_GDR_LEVEL"] == "5"


def test_bench_without_torch_is_a_one_line_input_error(tmp_path):
    # the real CLI in an interpreter where torch cannot be imported (sys.modules['torch'] = None is
    # Python's own way to block an import), as on a node without torch installed
    hide = tmp_path / "sitecustomize.py"
    hide.write_text("import sys\nsys.modules['torch'] = None\n")
    p = run_cli("bench", "--sizes", "1K..4K", "--nproc", "2",
                env={"PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "torch is not installed" in p.stderr and "Traceback" not in p.stderr
