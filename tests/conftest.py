"""Shared fixtures: the real data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (servers and torchrun rendezvous in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True, scope="session")
def _private_export_cache(tmp_path_factory):
    """Exported networks (the onnxruntime backend's cache) go to a temporary folder, not ~/.cache/hparse."""
    os.environ.setdefault("HPARSE_CACHE", str(tmp_path_factory.mktemp("hparse-cache")))
SHARED_DATA = Path(os.environ.get("HPARSE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def ccp_root() -> Path:
    root = SHARED_DATA / "ccp"
    if not (root / "train.txt").is_file():
        pytest.skip(f"CCP data not found at {root}")
    return root


@pytest.fixture(scope="session")
def cihp_samples_root() -> Path:
    root = SHARED_DATA / "cihp-samples"
    if not (root / "Category_rev_ids").is_dir():
        pytest.skip(f"CIHP samples not found at {root}")
    return root
