"""Pure policy checks that are not covered through the webhook tests."""

from __future__ import annotations

import pytest

from hpchub_api.models import HPCClusterSpec, JupyterServerSpec
from hpchub_operator.policy import violations


@pytest.mark.parametrize("user", ["root", "slurm"])
def test_privileged_accounts_never_get_servers(user: str) -> None:
    spec = JupyterServerSpec.model_validate({"user": user, "cluster": "c"})
    cluster = HPCClusterSpec.model_validate(
        {"slurm": {"restUrl": "http://s:6820", "monitorUser": "slurm"}})
    assert any(m.startswith("spec.user:") for m in violations(spec, cluster, "c"))


def test_ordinary_user_passes() -> None:
    spec = JupyterServerSpec.model_validate({"user": "alice", "cluster": "c"})
    cluster = HPCClusterSpec.model_validate({"slurm": {"restUrl": "http://s:6820"}})
    assert violations(spec, cluster, "c") == []
