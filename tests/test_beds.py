"""conftest's bed rules: a missing bed skips locally with its reason and install line, and fails under CI."""

from __future__ import annotations

import pytest

import conftest
from conftest import INSTALL, require


def test_missing_bed_skips_locally_with_the_install_line(monkeypatch):
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception) as e:
        require(False, "torch is not installed", "torch")
    assert str(e.value.msg) == f"torch is not installed; to run it: {INSTALL['torch']}"
    assert "torch==2.13.0" in e.value.msg


def test_missing_bed_fails_under_ci(monkeypatch):
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception) as e:
        require(False, "real captures not found", "captures")
    assert e.value.msg.startswith("test bed missing in CI: real captures not found; to run it: ")
    require(True, "never raised", "torch")


def test_every_install_line_is_a_command_or_a_place():
    # the torch lines pin the CPU build's version; Ray comes with its extra after torch
    assert "torch==2.13.0" in INSTALL["torch"] and "torch==2.13.0" in INSTALL["ray"] and "'.[cluster]'" in INSTALL["ray"]
    assert INSTALL["ping"] == "apt-get install iputils-ping"
    assert ".ci/softroce-setup.sh" in INSTALL["softroce"] and ".ci/docker-setup.sh" in INSTALL["docker"]
    assert str(conftest.CAPTURES) in INSTALL["captures"]
