"""Session fixture: a real single-node Slurm (munged, slurmctld, slurmd, slurmrestd)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hpchub_stack.base import make_root, remove_root
from hpchub_stack.slurm import SlurmCluster

from .registry import running


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A started Slurm with partitions ``compute`` (default) and ``gpu`` and JWT REST auth.

    Errors (never skips) with the daemons' log tails when it cannot start.
    """
    root = make_root("hpchub-slurm-")
    with running(SlurmCluster(root, cpus=32)) as cluster:
        yield cluster
    remove_root(root)
