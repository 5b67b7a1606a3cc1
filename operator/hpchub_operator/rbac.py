"""The Kubernetes rights the operator needs, and nothing more (the chart renders these)."""

from __future__ import annotations

from typing import Any

from hpchub_api import constants as c

OPERATOR_RULES: list[dict[str, Any]] = [
    # Our resources: watch, finalizers/annotations (kopf), status.
    {"apiGroups": [c.GROUP], "resources": [c.SERVER_PLURAL, c.CLUSTER_PLURAL],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [c.GROUP], "resources": [f"{c.SERVER_PLURAL}/status",
                                           f"{c.CLUSTER_PLURAL}/status"],
     "verbs": ["get", "patch"]},
    # Events about our objects (ours and kopf's).
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    # Token Secrets of standalone servers, the hub's token Secrets, the JWT key / SSH CA
    # Secrets named by HPCClusters, the callback HMAC key.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
    # kopf observes namespaces and CRDs to follow what it serves.
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["list", "watch"]},
    # The operator registers its admission webhook configuration. kopf manages a mutating
    # configuration of the same name too (left without webhooks) and stops if it may not.
    {"apiGroups": ["admissionregistration.k8s.io"],
     "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
     "verbs": ["get", "list", "watch", "create", "patch"]},
]
