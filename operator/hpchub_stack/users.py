"""The stack's test/demo HPC users: real Unix accounts (Slurm jobs and SSH sessions run as
them) mirrored in LDAP with the same uid/gid numbers, projects and passwords."""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass

from .process import run


@dataclass(frozen=True)
class HPCUser:
    """One demo account: Unix login, LDAP password and the projects (Slurm accounts) it is in."""

    login: str
    password: str
    projects: tuple[str, ...]
    admin: bool = False

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.login).pw_uid

    @property
    def gid(self) -> int:
        return pwd.getpwnam(self.login).pw_gid

    @property
    def home(self) -> str:
        return pwd.getpwnam(self.login).pw_dir


# Demo credentials are printed by `hpchub demo` and documented in README; they only ever
# exist on a machine running the local stack.
USERS: tuple[HPCUser, ...] = (
    HPCUser("alice", "alice-hpc-pass", ("proj-astro", "proj-gpu")),
    HPCUser("bob", "bob-hpc-pass", ("proj-bio",)),
    HPCUser("carol", "carol-hpc-pass", ("proj-astro",), admin=True),
)

PROJECTS: tuple[str, ...] = ("proj-astro", "proj-bio", "proj-gpu")
GROUP = "hpcusers"


def user(login: str) -> HPCUser:
    """The demo user with this login."""
    for u in USERS:
        if u.login == login:
            return u
    raise KeyError(login)


def ensure_unix_users() -> None:
    """Create the group and the users if missing (needs root). Idempotent."""
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        run(["groupadd", GROUP])
    for u in USERS:
        try:
            pwd.getpwnam(u.login)
        except KeyError:
            run(["useradd", "--create-home", "--shell", "/bin/bash", "--gid", GROUP, u.login])
