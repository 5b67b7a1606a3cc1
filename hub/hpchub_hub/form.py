"""The spawn form's HTML, rendered from :class:`~hpchub_hub.options.Choices` (pure).

Every value shown is escaped. Partitions, projects, GPU types and login nodes carry the
cluster they belong to (``data-cluster``); a few lines of script hide the other clusters'
choices. The server validates the submission again whatever the page let through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from .options import Choices, ClusterChoice


def _option(value: str, label: str, selected: bool, cluster: str | None = None) -> str:
    data = f' data-cluster="{escape(cluster)}"' if cluster else ""
    sel = " selected" if selected else ""
    return f'<option value="{escape(value)}"{data}{sel}>{escape(label)}</option>'


def _select(name: str, label: str, options: Iterable[str], help_text: str = "") -> str:
    hint = f'<small class="form-text text-muted">{escape(help_text)}</small>' if help_text else ""
    return (
        f'<div class="form-group mb-3"><label for="hpchub-{name}">{escape(label)}</label>'
        f'<select class="form-control form-select" id="hpchub-{name}" name="{name}">'
        f"{''.join(options)}</select>{hint}</div>"
    )


def _input(
    name: str, label: str, value: str, kind: str = "text", help_text: str = "", extra: str = ""
) -> str:
    hint = f'<small class="form-text text-muted">{escape(help_text)}</small>' if help_text else ""
    return (
        f'<div class="form-group mb-3"><label for="hpchub-{name}">{escape(label)}</label>'
        f'<input class="form-control" id="hpchub-{name}" name="{name}" type="{kind}" '
        f'value="{escape(value)}"{extra}>{hint}</div>'
    )


_SCRIPT = """<script>
(function () {
  var cluster = document.getElementById("hpchub-cluster");
  function sync() {
    var name = cluster ? cluster.value : null;
    document.querySelectorAll("#hpchub-form [data-cluster]").forEach(function (el) {
      var show = !name || el.getAttribute("data-cluster") === name;
      el.hidden = !show; el.disabled = !show;
    });
  }
  if (cluster) { cluster.addEventListener("change", sync); }
  sync();
})();
</script>"""


def render(choices: Choices, last: Mapping[str, Any] | None = None) -> str:
    """The form's inner HTML (JupyterHub wraps it in its <form>)."""
    last = dict(last or {})
    if not choices.clusters:
        return (
            '<div id="hpchub-form" class="alert alert-warning">No HPC cluster is '
            "available right now. Try again later or contact support.</div>"
        )
    current = str(last.get("cluster") or choices.default_cluster or choices.clusters[0].name)
    parts = [
        _select(
            "cluster",
            "Cluster",
            (
                _option(
                    cl.name,
                    cl.display_name + ("" if cl.reachable else " (unreachable)"),
                    cl.name == current,
                )
                for cl in choices.clusters
            ),
        )
    ]
    target = str(last.get("target") or "slurm")
    parts.append(
        _select(
            "target",
            "Where",
            [
                _option("slurm", "Compute node (Slurm job)", target == "slurm"),
                _option("login", "Login node", target == "login"),
            ],
        )
    )
    parts.append(
        _select(
            "account",
            "Project (Slurm account)",
            _accounts(choices, last),
            "Only your active projects are listed.",
        )
    )
    parts.append(_select("partition", "Partition", _partitions(choices.clusters, last)))
    parts.append(
        _input(
            "gpus",
            "GPUs",
            str(last.get("gpus") or 0),
            "number",
            "Per job; limit: " + ", ".join(f"{cl.name}: {cl.max_gpus}" for cl in choices.clusters),
            ' min="0" max="64"',
        )
    )
    parts.append(_select("gpu_type", "GPU type", _gpu_types(choices.clusters, last)))
    limit = str(last.get("time_limit") or _cluster(choices, current).default_time_limit)
    parts.append(
        _input(
            "time_limit",
            "Time limit",
            limit,
            help_text=(
                "Slurm time: minutes, H:MM:SS or D-HH:MM. Maximum: "
                + ", ".join(f"{cl.name}: {cl.max_time_limit}" for cl in choices.clusters)
            ),
        )
    )
    parts.append(
        _input(
            "cpus_per_task",
            "CPUs",
            str(last.get("cpus_per_task") or ""),
            "number",
            extra=' min="1"',
        )
    )
    parts.append(
        _input(
            "modules",
            "Modules to load",
            " ".join(last.get("modules") or [])
            if isinstance(last.get("modules"), list)
            else str(last.get("modules") or ""),
            help_text="Space-separated, e.g. python/3.11 cuda/12.2",
        )
    )
    parts.append(
        _input(
            "conda_env",
            "Conda environment",
            str(last.get("conda_env") or ""),
            help_text="A name or an absolute path (optional)",
        )
    )
    parts.append(_select("app", "Application", _apps(choices.clusters, last)))
    logins = [
        _option(n, n, n == last.get("login_node"), cl.name)
        for cl in choices.clusters
        for n in cl.login_nodes
    ]
    if logins:
        parts.append(_select("login_node", "Login node", [_option("", "any", True), *logins]))
    return f'<div id="hpchub-form">{"".join(parts)}</div>{_SCRIPT}'


def _cluster(choices: Choices, name: str) -> ClusterChoice:
    return choices.cluster(name) or choices.clusters[0]


def _accounts(choices: Choices, last: Mapping[str, Any]) -> list[str]:
    out = [
        _option(a, a, a == last.get("account"), cl.name)
        for cl in choices.clusters
        for a in cl.accounts
    ]
    if not out and not (choices.require_project and choices.projects is not None):
        out = [_option("", "(cluster default)", True)]
    return out


def _partitions(clusters: Iterable[ClusterChoice], last: Mapping[str, Any]) -> list[str]:
    out = []
    for cl in clusters:
        wanted = last.get("partition") or cl.default_partition
        for part in cl.partitions:
            label = part.name + (f" (max {part.max_time_limit})" if part.max_time_limit else "")
            out.append(_option(part.name, label, part.name == wanted, cl.name))
    return out


def _gpu_types(clusters: Iterable[ClusterChoice], last: Mapping[str, Any]) -> list[str]:
    out = [_option("", "any", not last.get("gpu_type"))]
    for cl in clusters:
        types = sorted({t for part in cl.partitions for t in part.gpu_types})
        out += [_option(t, t, t == last.get("gpu_type"), cl.name) for t in types]
    return out


def _apps(clusters: Iterable[ClusterChoice], last: Mapping[str, Any]) -> list[str]:
    return [_option(a, a, a == last.get("app"), cl.name) for cl in clusters for a in cl.apps]
