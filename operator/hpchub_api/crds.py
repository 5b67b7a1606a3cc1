"""Build the CustomResourceDefinitions from the typed models (one source of truth).

``crds/*.yaml`` is generated from here (``make crds``) and a unit test fails when they drift.
The pydantic JSON schema is turned into a Kubernetes *structural* schema: references inlined,
optional unions flattened, only the keywords apiextensions v1 accepts kept.
"""

from __future__ import annotations

from typing import Any

from . import constants as c
from .models import HPCClusterSpec, HPCClusterStatus, JupyterServerSpec, JupyterServerStatus

_KEEP = {
    "type", "properties", "items", "additionalProperties", "pattern", "maxLength", "minLength",
    "minimum", "maximum", "maxItems", "minItems", "maxProperties", "enum", "default",
    "description", "required", "format", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON-schema node into an apiextensions v1 structural schema."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unsupported union in schema: {schema}")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if rest.get("default", 0) is None:
            rest.pop("default")
        return structural({**options[0], **rest}, defs)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return structural({**schema["allOf"][0], **rest}, defs)
    if "const" in schema:
        schema = {**schema, "enum": [schema["const"]]}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items",) and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = structural(value, defs)
            # `false` is implied by pruning and not allowed next to properties.
        elif key == "default":
            # Object defaults become {} (nested defaults fill them in); empty strings and
            # nulls are not valid defaults for the API server.
            if isinstance(value, dict):
                out[key] = {}
            elif value not in ("", None):
                out[key] = value
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    free_form = not out.get("properties") and "additionalProperties" not in out
    if out.get("type") == "object" and free_form:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _schema(model: Any) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def _crd(kind: str, plural: str, short: str, scope: str, spec: Any, status: Any,
         columns: list[dict[str, Any]], description: str) -> dict[str, Any]:
    spec_schema = _schema(spec)
    status_schema = _schema(status)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{c.GROUP}"},
        "spec": {
            "group": c.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["hpchub"],
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _col(name: str, path: str, type_: str = "string", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


def jupyterserver_crd() -> dict[str, Any]:
    """The JupyterServer CRD manifest."""
    return _crd(
        c.SERVER_KIND, c.SERVER_PLURAL, c.SERVER_SHORT, "Namespaced",
        JupyterServerSpec, JupyterServerStatus,
        [
            _col("User", ".spec.user"),
            _col("Server", ".spec.serverName", priority=1),
            _col("Target", ".spec.target"),
            _col("Cluster", ".spec.cluster", priority=1),
            _col("Phase", ".status.phase"),
            _col("Job", ".status.jobId"),
            _col("Node", ".status.node"),
            _col("Reason", ".status.reason", priority=1),
            _col("Age", ".metadata.creationTimestamp", "date"),
            _col("URL", ".status.url"),
        ],
        "A Jupyter server for one HPC user, on a Slurm compute node or a login node.",
    )


def hpccluster_crd() -> dict[str, Any]:
    """The HPCCluster CRD manifest."""
    return _crd(
        c.CLUSTER_KIND, c.CLUSTER_PLURAL, c.CLUSTER_SHORT, "Cluster",
        HPCClusterSpec, HPCClusterStatus,
        [
            _col("Backend", ".spec.slurm.backend"),
            _col("Reachable", ".status.reachable", "boolean"),
            _col("Slurm", ".status.slurmVersion"),
            _col("Message", ".status.message", priority=1),
            _col("Age", ".metadata.creationTimestamp", "date"),
        ],
        "How to reach one Slurm cluster and its login nodes, and what users may ask of it.",
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD manifest, for every CRD the project defines."""
    return {
        f"{c.GROUP}_{c.SERVER_PLURAL}.yaml": jupyterserver_crd(),
        f"{c.GROUP}_{c.CLUSTER_PLURAL}.yaml": hpccluster_crd(),
    }
