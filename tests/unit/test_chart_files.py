"""The chart's copies and generated files match their single sources (scripts/sync-chart.py):
crds/ -> charts/hpchub/crds/, hub/jupyterhub_config.py -> charts/hpchub/files/, and
values.schema.yaml -> values.schema.json + docs/configuration.md."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hpchub"


def _sync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_chart", ROOT / "scripts" / "sync-chart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_files_match_their_sources() -> None:
    sync = _sync()
    stale = [str(p.relative_to(ROOT)) for p, text in sync.expected().items()
             if not p.exists() or p.read_text() != text]
    assert not stale, f"stale: {stale}; run `.venv/bin/python scripts/sync-chart.py`"


def test_chart_crds_are_exactly_the_top_level_crds() -> None:
    top = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == top


def test_every_schema_object_is_closed_and_described() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects, undescribed = [], []

    def walk(node: dict[str, Any], path: str, in_crd: bool) -> None:
        props = node.get("properties")
        if isinstance(props, dict):
            if node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, sub in props.items():
                if not in_crd and "description" not in sub:
                    undescribed.append(f"{path}.{key}")
                walk(sub, f"{path}.{key}", in_crd or (key == "spec" and "hpcClusters" in path))
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]", in_crd)

    walk(schema, "", False)
    assert not open_objects
    assert not undescribed


def test_defaults_and_examples_satisfy_the_documented_keys() -> None:
    """Every key used in values.yaml and the examples is in the reference doc."""
    doc = (ROOT / "docs" / "configuration.md").read_text()

    def keys(node: Any, path: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        out = []
        for k, v in node.items():
            here = f"{path}.{k}" if path else k
            if here.split(".")[-1] in {"requests", "limits", "annotations", "nodeSelector"}:
                out.append(here)
                continue
            out += [here, *keys(v, here)]
        return out

    for path in [CHART / "values.yaml", *sorted((CHART / "examples").glob("*.yaml"))]:
        for key in keys(yaml.safe_load(path.read_text()), ""):
            assert f"| `{key}` |" in doc, f"{path.name}: {key} is not documented"
