"""crds/ is generated from the typed models; fail when someone edits one and not the other."""

from __future__ import annotations

from pathlib import Path

from hpchub_api.crds import all_crds
from hpchub_operator.cli import render_crd

ROOT = Path(__file__).resolve().parents[2]


def test_crds_directory_matches_models() -> None:
    for name, crd in all_crds().items():
        committed = (ROOT / "crds" / name).read_text()
        assert committed == render_crd(crd), f"crds/{name} is stale: run `make crds`"


def test_every_spec_string_has_a_max_length() -> None:
    def walk(node: dict[str, object], path: str) -> list[str]:
        missing = []
        if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
            missing.append(path)
        props = node.get("properties")
        if isinstance(props, dict):
            for key, sub in props.items():
                missing += walk(sub, f"{path}.{key}")
        items = node.get("items")
        if isinstance(items, dict):
            missing += walk(items, f"{path}[]")
        return missing

    for crd in all_crds().values():
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert walk(spec, "spec") == []
