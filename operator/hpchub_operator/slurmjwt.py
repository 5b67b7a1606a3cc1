"""Short-lived Slurm JWTs (``auth/jwt``), minted per request for the user the operator acts as.

slurmctld verifies HS256 tokens with the cluster's ``jwt_key`` and reads the user from the
``sun`` claim. Whoever holds the key can name any user, so tokens are minted just before each
request and live at most :data:`MAX_LIFESPAN` seconds. Tokens are credentials: never log them.
"""

from __future__ import annotations

import time

import jwt

MAX_LIFESPAN = 300
"""Longest lifespan (seconds) this module mints: a leaked token is useless five minutes on."""


def mint_token(key: bytes, user: str, lifespan: int = MAX_LIFESPAN) -> str:
    """An HS256 token for ``user`` with claims ``sun``, ``iat`` and ``exp`` (``lifespan`` s).

    Raises ValueError for an empty key or user, or a lifespan outside 1..MAX_LIFESPAN.
    """
    if not key:
        raise ValueError("the Slurm JWT key is empty")
    if not user:
        raise ValueError("a Slurm token needs a user name")
    if not 0 < lifespan <= MAX_LIFESPAN:
        raise ValueError(f"token lifespan must be 1..{MAX_LIFESPAN} s, not {lifespan}")
    now = int(time.time())
    claims = {"sun": user, "iat": now, "exp": now + lifespan}
    return jwt.encode(claims, key, algorithm="HS256")
