"""The generated parts of docs/ match the code they describe, and the examples are valid.

Fix a failure by running the generator the message names (scripts/gen_*.py), or by
describing the new field where the test says.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from hpchub_api.models import HPCClusterSpec, JupyterServerSpec
from hpchub_operator import policy
from hpchub_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _script(name: str) -> ModuleType:
    """Import scripts/<name>.py (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def crd_docs() -> ModuleType:
    return _script("gen_crd_docs")


@pytest.fixture(scope="module")
def operator_docs() -> ModuleType:
    return _script("gen_operator_docs")


# ----------------------------------------------------------------------------- CRD reference


def test_crd_reference_is_current(crd_docs: ModuleType) -> None:
    page = (DOCS / "crd-reference.md").read_text()
    wanted = crd_docs.splice(page, crd_docs.render(crd_docs.load_crds()))
    assert page == wanted, "docs/crd-reference.md is stale: run scripts/gen_crd_docs.py"


def test_every_crd_field_is_described(crd_docs: ModuleType) -> None:
    undescribed = []
    for crd in crd_docs.load_crds():
        kind = crd["spec"]["names"]["kind"]
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        for top in ("spec", "status"):
            for path, node, _ in crd_docs.fields(schema[top], top):
                if not crd_docs.description(kind, path, node):
                    undescribed.append(f"{kind} {path}")
    assert undescribed == [], (
        "describe these fields (a docstring in hpchub_api.models, or DESCRIPTIONS in "
        f"scripts/gen_crd_docs.py): {undescribed}")


def test_hand_written_descriptions_name_real_fields(crd_docs: ModuleType) -> None:
    for crd in crd_docs.load_crds():
        kind = crd["spec"]["names"]["kind"]
        stale = set(crd_docs.DESCRIPTIONS.get(kind, {})) - crd_docs.field_paths(crd)
        assert stale == set(), f"DESCRIPTIONS[{kind!r}] names fields the CRD lacks: {stale}"


def _examples() -> dict[str, dict[str, Any]]:
    page = (DOCS / "crd-reference.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", page, flags=re.DOTALL)
    docs = [yaml.safe_load(block) for block in blocks]
    return {doc["kind"]: doc for doc in docs if isinstance(doc, dict) and "kind" in doc}


def test_crd_reference_examples_are_valid() -> None:
    examples = _examples()
    assert set(examples) == {"JupyterServer", "HPCCluster"}
    for doc in examples.values():
        assert doc["apiVersion"] == "hpchub.io/v1alpha1"
    cluster = HPCClusterSpec.model_validate(examples["HPCCluster"]["spec"])
    server = JupyterServerSpec.model_validate(examples["JupyterServer"]["spec"])
    cluster_name = examples["HPCCluster"]["metadata"]["name"]
    assert server.cluster == cluster_name
    assert policy.violations(server, cluster, cluster_name) == []


# ----------------------------------------------------------------------------- operator


def test_operator_configuration_is_current(operator_docs: ModuleType) -> None:
    page = (DOCS / "operator-configuration.md").read_text()
    assert page == operator_docs.wanted(page), (
        "docs/operator-configuration.md is stale: run scripts/gen_operator_docs.py")


def test_every_setting_has_a_docstring(operator_docs: ModuleType) -> None:
    documented = operator_docs.field_docstrings(OperatorSettings)
    missing = set(OperatorSettings.model_fields) - set(documented)
    assert missing == set(), f"write a docstring under these OperatorSettings fields: {missing}"


def test_every_metric_is_found(operator_docs: ModuleType) -> None:
    names = {m.name for m in operator_docs.metric_defs()}
    assert {"hpchub_servers", "hpchub_slurm_polls_total",
            "hpchub_callback_rejections"} <= names


# ----------------------------------------------------------------------------- index


def test_every_page_is_in_the_index() -> None:
    index = (DOCS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([a-z0-9-]+\.md)(?:#[^)]*)?\)", index))
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert pages - linked == set(), "link these pages from docs/README.md"
