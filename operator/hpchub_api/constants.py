"""Names shared by the operator, the hub and the CRDs: the API contract in one place."""

from __future__ import annotations

from typing import Final

GROUP: Final = "hpchub.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

SERVER_KIND: Final = "JupyterServer"
SERVER_PLURAL: Final = "jupyterservers"
SERVER_SHORT: Final = "jsrv"

CLUSTER_KIND: Final = "HPCCluster"
CLUSTER_PLURAL: Final = "hpcclusters"
CLUSTER_SHORT: Final = "hpcc"

# Our own prefix: kopf's annotations, finalizer and progress storage live under it too.
PREFIX: Final = GROUP
FINALIZER: Final = f"{GROUP}/finalizer"
LABEL_USER: Final = f"{GROUP}/user"
LABEL_SERVER_NAME: Final = f"{GROUP}/server-name"
LABEL_CLUSTER: Final = f"{GROUP}/cluster"
LABEL_COMPONENT: Final = f"{GROUP}/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
ANNOTATION_SUBMIT_INTENT: Final = f"{GROUP}/submit-intent"

# Slurm job tagging: the comment carries the CR uid so a restarted operator adopts its jobs.
JOB_COMMENT_PREFIX: Final = "hpchub:"
JOB_NAME_PREFIX: Final = "hpchub-"


def job_comment(uid: str) -> str:
    """The Slurm job comment that ties a job to one JupyterServer (by uid)."""
    return f"{JOB_COMMENT_PREFIX}{uid}"


def uid_from_comment(comment: str | None) -> str | None:
    """The JupyterServer uid a job comment names, or None for jobs that are not ours."""
    if comment and comment.startswith(JOB_COMMENT_PREFIX):
        return comment[len(JOB_COMMENT_PREFIX) :] or None
    return None


# Login-node servers are tracked like jobs, with ids "login:<node>:<pid>".
LOGIN_JOB_PREFIX: Final = "login:"


def job_label(job_id: str) -> str:
    """How users read a job id: a Slurm job, or a process on a login node."""
    if job_id.startswith(LOGIN_JOB_PREFIX):
        _, node, pid = ([*job_id.split(":", 2), "", ""])[:3]
        return f"process {pid} on login node {node}"
    return f"Slurm job {job_id}"
