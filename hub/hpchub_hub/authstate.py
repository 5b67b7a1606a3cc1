"""The auth_state a successful login stores (JupyterHub encrypts it) and the spawner reads.

Pure: built from the attributes of the user's LDAP entry and the names of the LDAP groups the
user is a member of. HOME comes from ``homeDirectory`` by default; WORK and SCRATCH come from
configurable attributes when the directory has them, else from templates such as
``/work/{login}`` (the standard schemas have no attribute for them).
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

TEMPLATE_FIELDS = ("login", "uid_number", "gid_number")
"""Names a path template may use, e.g. ``/gpfswork/{gid_number}/{login}``."""


class HPCAuthState(TypedDict):
    """Schema of ``auth_state`` (version 1). Keys are stable; the spawner depends on them."""

    version: int
    login: str
    dn: str
    uid_number: int
    gid_number: int
    home: str
    work: str
    scratch: str
    projects: list[str]
    groups: list[str]
    admin: bool


AUTH_STATE_VERSION = 1


class AccountError(Exception):
    """The directory entry cannot make a usable HPC account (the login is refused)."""


@dataclass(frozen=True)
class AccountSpec:
    """Where each piece of the account comes from."""

    uid_number_attribute: str = "uidNumber"
    gid_number_attribute: str = "gidNumber"
    home_attribute: str = "homeDirectory"
    work_attribute: str = ""
    scratch_attribute: str = ""
    home_template: str = "/home/{login}"
    work_template: str = "/work/{login}"
    scratch_template: str = "/scratch/{login}"
    project_groups: str = "proj-*"
    """Glob (case-sensitive) selecting which LDAP groups are projects; empty: none."""
    projects_attribute: str = ""
    """An attribute of the user's entry listing further projects; empty: not used."""
    admin_groups: tuple[str, ...] = ()

    def attributes(self) -> list[str]:
        """The attributes to read from the user's entry."""
        names = [
            "uid",
            self.uid_number_attribute,
            self.gid_number_attribute,
            self.home_attribute,
            self.work_attribute,
            self.scratch_attribute,
            self.projects_attribute,
        ]
        return sorted({n for n in names if n})


def check_template(template: str) -> None:
    """Raise ValueError unless ``template`` formats with the documented fields into an
    absolute path."""
    try:
        path = template.format(login="x", uid_number=1, gid_number=1)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"bad path template {template!r}: {exc!r}; fields are {', '.join(TEMPLATE_FIELDS)}"
        ) from None
    if not path.startswith("/"):
        raise ValueError(f"path template {template!r} must give an absolute path")


def first_value(attributes: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The first value of an attribute (names compared case-insensitively), or None."""
    if not name:
        return None
    wanted = name.lower()
    for key, values in attributes.items():
        if key.lower() == wanted and values:
            return values[0]
    return None


def all_values(attributes: Mapping[str, Sequence[str]], name: str) -> list[str]:
    """Every value of an attribute (names compared case-insensitively)."""
    if not name:
        return []
    wanted = name.lower()
    return [v for key, values in attributes.items() if key.lower() == wanted for v in values]


def _id_number(attributes: Mapping[str, Sequence[str]], name: str) -> int:
    raw = first_value(attributes, name)
    if raw is None:
        raise AccountError(f"entry has no {name}")
    try:
        number = int(raw)
    except ValueError:
        raise AccountError(f"{name} is not a number: {raw[:32]!r}") from None
    if not 0 < number < 2**32 - 1:
        raise AccountError(f"{name} {number} is out of range (root and nobody are refused)")
    return number


def _clean_path(value: str, what: str) -> str:
    if not value.startswith("/") or any(ord(ch) < 32 for ch in value):
        raise AccountError(f"{what} is not a clean absolute path: {value[:64]!r}")
    normal = posixpath.normpath(value)
    if normal != value.rstrip("/") and value != "/":
        raise AccountError(f"{what} is not a normalized path: {value[:64]!r}")
    return normal


def _path(
    attributes: Mapping[str, Sequence[str]],
    attribute: str,
    template: str,
    fields: Mapping[str, object],
    what: str,
) -> str:
    value = first_value(attributes, attribute)
    if value is None:
        value = template.format(**fields)
    return _clean_path(value, what)


def projects_of(groups: Iterable[str], attribute_values: Iterable[str], pattern: str) -> list[str]:
    """Project names: the groups matching ``pattern``, plus the attribute's values; sorted,
    without duplicates."""
    from_groups = {g for g in groups if pattern and fnmatch.fnmatchcase(g, pattern)}
    return sorted(from_groups | {v for v in attribute_values if v})


def build_auth_state(
    login: str,
    dn: str,
    attributes: Mapping[str, Sequence[str]],
    groups: Iterable[str],
    spec: AccountSpec,
) -> HPCAuthState:
    """The auth_state of ``login``; raises AccountError when the entry is unusable."""
    uid_number = _id_number(attributes, spec.uid_number_attribute)
    gid_number = _id_number(attributes, spec.gid_number_attribute)
    fields = {"login": login, "uid_number": uid_number, "gid_number": gid_number}
    group_list = sorted(set(groups))
    extra_projects = all_values(attributes, spec.projects_attribute)
    return HPCAuthState(
        version=AUTH_STATE_VERSION,
        login=login,
        dn=dn,
        uid_number=uid_number,
        gid_number=gid_number,
        home=_path(attributes, spec.home_attribute, spec.home_template, fields, "HOME"),
        work=_path(attributes, spec.work_attribute, spec.work_template, fields, "WORK"),
        scratch=_path(attributes, spec.scratch_attribute, spec.scratch_template, fields, "SCRATCH"),
        projects=projects_of(group_list, extra_projects, spec.project_groups),
        groups=group_list,
        admin=bool(set(spec.admin_groups) & set(group_list)),
    )
