"""Generate the settings and metrics tables of docs/operator-configuration.md.

* Settings: every field of ``hpchub_operator.settings.OperatorSettings`` (environment variable
  ``HPCHUB_<FIELD>``, type, default, bounds) with the docstring written under the field.
* Metrics: every Prometheus metric the operator defines, read from the source of
  ``metrics.py`` and ``callback.py`` (name as exposed, type, labels, help).

Only the parts between the named markers are rewritten; the rest of the page is prose.
``tests/unit/test_docs_drift.py`` fails when the page is stale.

    .venv/bin/python scripts/gen_operator_docs.py          # rewrite the generated parts
    .venv/bin/python scripts/gen_operator_docs.py --check  # exit 1 when the page is stale
"""

from __future__ import annotations

import ast
import inspect
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPTS = str(Path(__file__).resolve().parent)
if SCRIPTS not in sys.path:  # scripts/ is not a package, and tests import this file by path
    sys.path.insert(0, SCRIPTS)
from docgen_common import ROOT, rewrite_or_check  # noqa: E402

OPERATOR = ROOT / "operator" / "hpchub_operator"
PAGE = ROOT / "docs" / "operator-configuration.md"
METRIC_SOURCES = (OPERATOR / "metrics.py", OPERATOR / "callback.py")
_METRIC_TYPES = {"Counter": "counter", "Histogram": "histogram", "Gauge": "gauge",
                 "Summary": "summary", "GaugeMetricFamily": "gauge",
                 "CounterMetricFamily": "counter"}


def begin(region: str) -> str:
    return f"<!-- BEGIN GENERATED {region} by scripts/gen_operator_docs.py: do not edit -->"


def end(region: str) -> str:
    return f"<!-- END GENERATED {region} -->"


# ----------------------------------------------------------------------------- settings


def field_docstrings(cls: type) -> dict[str, str]:
    """The string literal written under each annotated field of ``cls``."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def type_name(annotation: Any) -> str:
    """A reader's name for a settings type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(type_name(a) for a in args) + " (optional)"
    if typing.get_origin(annotation) is list:
        return "comma-separated list"
    return getattr(annotation, "__name__", str(annotation))


def bounds(metadata: list[Any]) -> str:
    """Numeric bounds of a field (``annotated_types`` Ge/Gt/Le/Lt)."""
    parts = []
    for item in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(parts)


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if value == []:
        return "empty"
    return f"`{value}`"


def render_settings() -> str:
    """One row per OperatorSettings field."""
    from hpchub_operator.settings import OperatorSettings

    docs = field_docstrings(OperatorSettings)
    rows = ["| variable | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for name, info in OperatorSettings.model_fields.items():
        cells = [f"`HPCHUB_{name.upper()}`", type_name(info.annotation),
                 _default(info.default), bounds(list(info.metadata)), docs.get(name, "")]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricDef:
    """One metric as its source defines it."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str
    source: str

    @property
    def exposed(self) -> str:
        """The sample names Prometheus scrapes."""
        if self.kind == "counter":
            return self.name if self.name.endswith("_total") else f"{self.name}_total"
        return self.name


def _literal(node: ast.AST | None) -> Any:
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def metric_defs(paths: tuple[Path, ...] = METRIC_SOURCES) -> list[MetricDef]:
    """Every metric constructor call with a literal name in ``paths``."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            ctor = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if ctor not in _METRIC_TYPES or len(node.args) < 2:
                continue
            name, text = _literal(node.args[0]), _literal(node.args[1])
            if not isinstance(name, str):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            labels = _literal(node.args[2] if len(node.args) > 2 else
                              kw.get("labelnames", kw.get("labels"))) or ()
            found.append(MetricDef(name, _METRIC_TYPES[ctor], tuple(labels), str(text),
                                   str(path.relative_to(ROOT))))
    return sorted(found, key=lambda m: m.name)


def render_metrics() -> str:
    """One row per metric."""
    rows = ["| metric | type | labels | meaning | defined in |", "|---|---|---|---|---|"]
    for m in metric_defs():
        labels = ", ".join(f"`{x}`" for x in m.labels) or "none"
        kind = "histogram (`_bucket`, `_sum`, `_count`)" if m.kind == "histogram" else m.kind
        rows.append(f"| `{m.exposed}` | {kind} | {labels} | {m.help} | `{m.source}` |")
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- page


def regions() -> dict[str, str]:
    return {"settings": render_settings(), "metrics": render_metrics()}


def splice(page: str, region: str, generated: str) -> str:
    """``page`` with the named region replaced; a page without its markers is an error."""
    head, found, rest = page.partition(begin(region))
    _, found_end, tail = rest.partition(end(region))
    if not (found and found_end):
        raise ValueError(f"{PAGE.name} has no markers for region {region!r}")
    return f"{head}{begin(region)}\n\n{generated}\n{end(region)}{tail}"


def wanted(page: str) -> str:
    for region, generated in regions().items():
        page = splice(page, region, generated)
    return page


def main(argv: list[str] | None = None) -> int:
    return rewrite_or_check(argv, description=__doc__.split("\n", 1)[0], page=PAGE,
                            script=__file__, wanted=wanted)


if __name__ == "__main__":
    raise SystemExit(main())
