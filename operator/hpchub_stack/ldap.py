"""An OpenLDAP directory (slapd) holding the stack's demo users, projects and admin group.

slapd runs in the foreground on its own ``slapd.conf`` (no debconf, no ``cn=config``), with
an mdb database loaded by ``slapadd`` before start-up. People live under ``ou=people`` as
``posixAccount`` + ``inetOrgPerson`` entries carrying the real Unix uid/gid numbers, groups
under ``ou=groups`` as ``posixGroup`` with ``memberUid``. A read-only service account
``cn=hub-reader,ou=services`` is what the hub uses for search-then-bind.

The standard schemas (core, cosine, nis, inetorgperson) have no attribute for per-user WORK or
SCRATCH directories, so the directory does not carry them: the hub derives those paths from
templates (for example ``/work/{login}``) instead.
"""

from __future__ import annotations

import grp
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

import ldap3

from .base import OneProcessService
from .process import ServiceError, free_port, fresh_dir, run
from .users import GROUP, PROJECTS, USERS, HPCUser

SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SLAPD = "/usr/sbin/slapd"
ADMIN_GROUP = "hpc-admins"
FIRST_PROJECT_GID = 20000
"""gidNumber of the first project group when no Unix group of that name exists."""


def hash_password(password: str) -> str:
    """A salted SHA-1 (``{SSHA}``) hash made by ``slappasswd``, as slapd stores it."""
    res = run(["slappasswd", "-h", "{SSHA}", "-s", password])
    return res.stdout.decode().strip()


def group_gid(name: str, fallback: int) -> int:
    """The gid of the Unix group ``name`` when it exists, else ``fallback``."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return fallback


class LdapDirectory(OneProcessService):
    """slapd on 127.0.0.1 with the demo users; implements the stack's Service protocol."""

    name = "ldap"
    log_names = ("slapd.log",)

    def __init__(
        self,
        root: Path,
        *,
        users: Sequence[HPCUser] = USERS,
        projects: Sequence[str] = PROJECTS,
        base_dn: str = "dc=hpc,dc=test",
        port: int | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self.dir = root / self.name
        self.users = tuple(users)
        self.projects = tuple(projects)
        self.base_dn = base_dn
        self.people_dn = f"ou=people,{base_dn}"
        self.groups_dn = f"ou=groups,{base_dn}"
        self.services_dn = f"ou=services,{base_dn}"
        self.admin_dn = f"cn=admin,{base_dn}"
        self.reader_dn = f"cn=hub-reader,{self.services_dn}"
        self.admin_password = secrets.token_urlsafe(16)
        self.reader_password = secrets.token_urlsafe(16)
        self.port = port
        self.ready_timeout = ready_timeout

    # -- public surface ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``ldap://127.0.0.1:PORT`` (valid once started)."""
        if self.port is None:
            raise ServiceError("ldap: not started")
        return f"ldap://127.0.0.1:{self.port}"

    def user_dn(self, login: str) -> str:
        """The DN of a person entry."""
        return f"uid={login},{self.people_dn}"

    def start(self) -> None:
        """Write the config, load the entries with slapadd and start slapd; block until a
        bind as the reader account succeeds."""
        if self.port is None:
            self.port = free_port()
        self._prepare_dirs()
        conf = self._write_config()
        ldif = self.dir / "init.ldif"
        ldif.write_text(self.initial_ldif())
        run(["slapadd", "-f", str(conf), "-l", str(ldif)])
        shutil.chown(self.dir / "data", "openldap", "openldap")
        for path in (self.dir / "data").iterdir():
            shutil.chown(path, "openldap", "openldap")
        self._start_process(
            [
                SLAPD,
                "-f",
                str(conf),
                "-h",
                f"{self.url}/",
                "-u",
                "openldap",
                "-g",
                "openldap",
                "-d",
                "stats",
            ],
            ready=self._reader_can_bind,
        )

    # -- configuration ----------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        fresh_dir(self.dir)
        (self.dir / "data").mkdir()
        (self.dir / "run").mkdir()
        shutil.chown(self.dir / "run", "openldap", "openldap")
        self.dir.chmod(0o755)

    def _write_config(self) -> Path:
        conf = self.dir / "slapd.conf"
        conf.write_text(self.slapd_conf(hash_password(self.admin_password)))
        conf.chmod(0o640)
        shutil.chown(conf, "root", "openldap")
        return conf

    def slapd_conf(self, rootpw_hash: str) -> str:
        """The slapd.conf text: schemas, mdb database, and ACLs that hide passwords."""
        schemas = "\n".join(
            f"include {SCHEMA_DIR / name}.schema"
            for name in ("core", "cosine", "nis", "inetorgperson")
        )
        return f"""{schemas}
pidfile {self.dir / "run" / "slapd.pid"}
argsfile {self.dir / "run" / "slapd.args"}
modulepath {MODULE_DIR}
moduleload back_mdb

database mdb
maxsize 104857600
suffix "{self.base_dn}"
rootdn "{self.admin_dn}"
rootpw {rootpw_hash}
directory {self.dir / "data"}
index objectClass eq
index uid,memberUid eq

access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
access to *
  by dn.exact="{self.reader_dn}" read
  by self read
  by users read
  by anonymous auth
  by * none
"""

    def initial_ldif(self) -> str:
        """Every entry of the directory as LDIF (passwords already hashed)."""
        blocks = [self._base_entries(), *(self._person(u) for u in self.users)]
        blocks.extend(self._groups())
        return "\n".join(blocks)

    def _base_entries(self) -> str:
        dc = self.base_dn.split(",")[0].split("=")[1]
        return f"""dn: {self.base_dn}
objectClass: dcObject
objectClass: organization
dc: {dc}
o: hpchub stack

dn: {self.people_dn}
objectClass: organizationalUnit
ou: people

dn: {self.groups_dn}
objectClass: organizationalUnit
ou: groups

dn: {self.services_dn}
objectClass: organizationalUnit
ou: services

dn: {self.reader_dn}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: hub-reader
description: read-only account for the hub's search-then-bind
userPassword: {hash_password(self.reader_password)}
"""

    def _person(self, u: HPCUser) -> str:
        try:
            uid, gid, home = u.uid, u.gid, u.home
        except KeyError as exc:
            raise ServiceError(
                f"ldap: Unix user {u.login} is missing; call users.ensure_unix_users() first"
            ) from exc
        return f"""dn: {self.user_dn(u.login)}
objectClass: inetOrgPerson
objectClass: posixAccount
uid: {u.login}
cn: {u.login.capitalize()}
sn: {u.login.capitalize()}
mail: {u.login}@hpc.test
uidNumber: {uid}
gidNumber: {gid}
homeDirectory: {home}
loginShell: /bin/bash
userPassword: {hash_password(u.password)}
"""

    def _groups(self) -> list[str]:
        everyone = [u.login for u in self.users]
        groups = [(GROUP, group_gid(GROUP, FIRST_PROJECT_GID - 1), everyone)]
        for i, project in enumerate(self.projects):
            members = [u.login for u in self.users if project in u.projects]
            groups.append((project, group_gid(project, FIRST_PROJECT_GID + i), members))
        admins = [u.login for u in self.users if u.admin]
        groups.append((ADMIN_GROUP, group_gid(ADMIN_GROUP, FIRST_PROJECT_GID - 2), admins))
        return [self._group(name, gid, members) for name, gid, members in groups]

    def _group(self, name: str, gid: int, members: Sequence[str]) -> str:
        lines = [
            f"dn: cn={name},{self.groups_dn}",
            "objectClass: posixGroup",
            f"cn: {name}",
            f"gidNumber: {gid}",
        ]
        lines.extend(f"memberUid: {m}" for m in members)
        return "\n".join(lines) + "\n"

    # -- readiness --------------------------------------------------------------------------

    def _reader_can_bind(self) -> bool:
        server = ldap3.Server(self.url, connect_timeout=1)
        conn = ldap3.Connection(server, self.reader_dn, self.reader_password, receive_timeout=2)
        try:
            return bool(conn.bind())
        finally:
            conn.unbind()
