"""The Kubernetes rights the hub's spawner needs, and nothing more (the chart renders these)."""

from __future__ import annotations

from typing import Any

from hpchub_api import constants as c

HUB_NAMESPACE_RULES: list[dict[str, Any]] = [
    # Create, watch and delete the users' servers (never patch or update them).
    {
        "apiGroups": [c.GROUP],
        "resources": [c.SERVER_PLURAL],
        "verbs": ["create", "get", "list", "watch", "delete"],
    },
    # The token Secret: created before the server, then adopted by it (ownerReferences).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "patch", "delete"]},
    # Events about the servers feed the spawn page's progress.
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"]},
]
"""Role rules in the namespace of the hub's JupyterServers."""

HUB_CLUSTER_RULES: list[dict[str, Any]] = [
    # The form's choices: partitions, GPU types and policy of every HPCCluster.
    {"apiGroups": [c.GROUP], "resources": [c.CLUSTER_PLURAL], "verbs": ["get", "list", "watch"]},
]
"""ClusterRole rules (HPCClusters are cluster-scoped)."""
