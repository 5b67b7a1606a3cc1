"""Session fixtures: real slapd, PostgreSQL, Redis, sshd and Traefik on 127.0.0.1.

Each service starts once per session in its own folder of one temp root and is stopped at
the end. A service that cannot start errors the tests that use it, with its log tail in the
message (never a skip).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hpchub_stack import users
from hpchub_stack.base import make_root, remove_root
from hpchub_stack.ldap import LdapDirectory
from hpchub_stack.postgres import Postgres
from hpchub_stack.redis import Redis
from hpchub_stack.sshd import SSHServer
from hpchub_stack.traefik import Traefik

from .registry import running


@pytest.fixture(scope="session")
def services_root() -> Iterator[Path]:
    """One temp directory holding every service of this module, removed at session end."""
    root = make_root("hpchub-services-")
    yield root
    remove_root(root)


@pytest.fixture(scope="session")
def unix_users() -> None:
    """The demo users exist as Unix accounts (LDAP mirrors their ids; SSH logs in as them)."""
    users.ensure_unix_users()


@pytest.fixture(scope="session")
def ldap(services_root: Path, unix_users: None) -> Iterator[LdapDirectory]:
    """slapd with the demo users, project groups, hpc-admins and a reader account."""
    with running(LdapDirectory(services_root)) as directory:
        yield directory


@pytest.fixture(scope="session")
def postgres(services_root: Path) -> Iterator[Postgres]:
    """PostgreSQL with a ``jupyterhub`` database owned by a password role."""
    with running(Postgres(services_root)) as server:
        yield server


@pytest.fixture(scope="session")
def redis(services_root: Path) -> Iterator[Redis]:
    """redis-server with a generated password (as the hub's Traefik provider uses it)."""
    with running(Redis(services_root, generate_password=True)) as server:
        yield server


@pytest.fixture(scope="session")
def sshd(services_root: Path, unix_users: None) -> Iterator[SSHServer]:
    """sshd accepting only certificates from the stack's user CA."""
    with running(SSHServer(services_root)) as server:
        yield server


@pytest.fixture(scope="session")
def traefik(services_root: Path, redis: Redis) -> Iterator[Traefik]:
    """Traefik with the Redis provider (root key ``traefik``) and a file-provider folder."""
    with running(Traefik(services_root, redis=redis, file_provider=True)) as proxy:
        yield proxy
