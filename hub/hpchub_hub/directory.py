"""The LDAP side: the only module that talks to the directory (ldap3, blocking calls).

``LdapDirectory.verify(login, password)`` does the whole exchange for one login:

- search-then-bind: bind as the service account (or anonymously when no bind DN is set),
  search the user under the user base with the login escaped into the filter, require exactly
  one entry, then bind as that entry's DN with the password on a fresh connection; or
- bind-DN template: bind directly as ``template.format(login=<RDN-escaped login>)`` and read
  the entry as the user;

then list the groups the user is a member of. Every call is blocking: the authenticator runs
``verify`` in a worker thread. Timeouts bound every socket operation, so a dead or silent
server fails in at most about ``connect_timeout`` per server plus ``receive_timeout`` per
request.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

INVALID_CREDENTIALS = 49


class DirectoryUnavailable(Exception):
    """The directory could not be asked (down, timed out, TLS failure, service bind refused)."""


class Refused(Exception):
    """The directory answered and the login is refused (reason in the message, for the log)."""


@dataclass(frozen=True)
class DirectorySettings:
    """How to reach and query the directory (built from the authenticator's traits)."""

    urls: tuple[str, ...]
    start_tls: bool = False
    tls_ca_file: str = ""
    tls_verify: bool = True
    connect_timeout: float = 5.0
    receive_timeout: int = 10
    bind_dn: str = ""
    bind_password: str = ""
    bind_dn_template: str = ""
    user_search_base: str = ""
    user_search_filter: str = "(&(objectClass=posixAccount)(uid={login}))"
    user_attributes: tuple[str, ...] = ("uid",)
    login_attribute: str = "uid"
    group_search_base: str = ""
    group_search_filter: str = "(&(objectClass=posixGroup)(memberUid={login}))"
    group_name_attribute: str = "cn"


@dataclass(frozen=True)
class DirectoryAccount:
    """What the directory says about a user whose password it accepted."""

    dn: str
    attributes: Mapping[str, Sequence[str]]
    groups: tuple[str, ...]


def _decode(raw: Mapping[str, Sequence[bytes]]) -> dict[str, list[str]]:
    return {
        name: [v.decode("utf-8", errors="replace") for v in values] for name, values in raw.items()
    }


def _entries(conn: ldap3.Connection) -> list[dict[str, Any]]:
    return [e for e in (conn.response or []) if e.get("type") == "searchResEntry"]


def _check_search(conn: ldap3.Connection, what: str, base: str) -> None:
    """Raise DirectoryUnavailable unless the last search completed (with or without entries;
    a size limit hit still returned entries)."""
    description = conn.result.get("description")
    if description not in ("success", "sizeLimitExceeded"):
        raise DirectoryUnavailable(f"{what} under {base!r} failed: {description}")


class LdapDirectory:
    """Search-then-bind (or template bind) against one or more LDAP servers."""

    def __init__(self, settings: DirectorySettings) -> None:
        self.settings = settings
        tls = None
        if any(u.lower().startswith("ldaps://") for u in settings.urls) or settings.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED if settings.tls_verify else ssl.CERT_NONE,
                ca_certs_file=settings.tls_ca_file or None,
                version=ssl.PROTOCOL_TLS_CLIENT,
            )
        servers = [
            ldap3.Server(
                url, get_info=ldap3.NONE, tls=tls, connect_timeout=settings.connect_timeout
            )
            for url in settings.urls
        ]
        # One server: use it as is. Several: active=1 tries each once per connection (never
        # loops forever); exhaust=False tries a server that was down again next time.
        self._target: ldap3.Server | ldap3.ServerPool = (
            servers[0]
            if len(servers) == 1
            else ldap3.ServerPool(servers, ldap3.FIRST, active=1, exhaust=False)
        )

    # -- one login ----------------------------------------------------------------------

    def verify(self, login: str, password: str) -> DirectoryAccount:
        """The account of ``login`` if ``password`` is right. Raises Refused (wrong password,
        unknown or ambiguous user) or DirectoryUnavailable. ``login`` and ``password`` must
        already have been validated (non-blank password: an empty one is an anonymous bind).
        """
        if not password or not password.strip():
            raise Refused("blank password reached the directory layer")  # defence in depth
        try:
            if self.settings.bind_dn_template:
                return self._verify_by_template(login, password)
            return self._verify_by_search(login, password)
        except LDAPException as exc:
            raise DirectoryUnavailable(f"{type(exc).__name__}: {exc}") from None

    def _verify_by_search(self, login: str, password: str) -> DirectoryAccount:
        s = self.settings
        service = self._connect(s.bind_dn or None, s.bind_password or None)
        try:
            if not service.bind():
                raise DirectoryUnavailable(
                    f"service bind as {s.bind_dn or '(anonymous)'} failed: "
                    f"{service.result.get('description')}"
                )
            dn, attributes = self._find_user(service, login)
            user = self._connect(dn, password)
            try:
                self._bind_user(user, dn)
            finally:
                user.unbind()
            return DirectoryAccount(dn, attributes, self._groups(service, login))
        finally:
            service.unbind()

    def _verify_by_template(self, login: str, password: str) -> DirectoryAccount:
        dn = self.settings.bind_dn_template.format(login=escape_rdn(login))
        user = self._connect(dn, password)
        try:
            self._bind_user(user, dn)
            ok = user.search(
                dn, "(objectClass=*)", ldap3.BASE, attributes=list(self.settings.user_attributes)
            )
            entries = _entries(user)
            if not ok or len(entries) != 1:
                raise Refused(f"bound as {dn} but cannot read the entry")
            attributes = _decode(entries[0]["raw_attributes"])
            self._check_login(login, attributes)
            return DirectoryAccount(dn, attributes, self._groups(user, login))
        finally:
            user.unbind()

    # -- steps --------------------------------------------------------------------------

    def _connect(self, user: str | None, password: str | None) -> ldap3.Connection:
        conn = ldap3.Connection(
            self._target,
            user=user,
            password=password,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            raise_exceptions=False,
            receive_timeout=self.settings.receive_timeout,
        )
        conn.open()
        if self.settings.start_tls and not conn.start_tls():
            raise DirectoryUnavailable(f"StartTLS failed: {conn.result.get('description')}")
        return conn

    def _bind_user(self, conn: ldap3.Connection, dn: str) -> None:
        if conn.bind():
            return
        code = conn.result.get("result")
        if code == INVALID_CREDENTIALS:
            raise Refused(f"wrong password for {dn}")
        raise Refused(f"bind as {dn} refused: {conn.result.get('description')} ({code})")

    def _find_user(self, conn: ldap3.Connection, login: str) -> tuple[str, dict[str, list[str]]]:
        s = self.settings
        search_filter = s.user_search_filter.format(login=escape_filter_chars(login))
        # search() returns False both for "no entry" and for errors: judge by the result code
        conn.search(
            s.user_search_base,
            search_filter,
            ldap3.SUBTREE,
            attributes=list(s.user_attributes),
            size_limit=2,
        )
        _check_search(conn, "user search", s.user_search_base)
        entries = _entries(conn)
        if not entries:
            raise Refused("no such user")
        if len(entries) > 1:
            raise Refused("the login matches more than one entry")
        attributes = _decode(entries[0]["raw_attributes"])
        self._check_login(login, attributes)
        return str(entries[0]["dn"]), attributes

    def _check_login(self, login: str, attributes: Mapping[str, Sequence[str]]) -> None:
        """The entry's own login attribute must equal the typed login exactly: LDAP matched
        it case-insensitively, the hub must not (one entry, one hub name)."""
        wanted = self.settings.login_attribute.lower()
        values = [v for k, vs in attributes.items() if k.lower() == wanted for v in vs]
        if login not in values:
            raise Refused(f"entry's {self.settings.login_attribute} {values!r} differs from login")

    def _groups(self, conn: ldap3.Connection, login: str) -> tuple[str, ...]:
        s = self.settings
        if not s.group_search_base:
            return ()
        conn.search(
            s.group_search_base,
            s.group_search_filter.format(login=escape_filter_chars(login)),
            ldap3.SUBTREE,
            attributes=[s.group_name_attribute],
        )
        _check_search(conn, "group search", s.group_search_base)
        wanted = s.group_name_attribute.lower()
        names: set[str] = set()
        for entry in _entries(conn):
            for name, values in _decode(entry["raw_attributes"]).items():
                if name.lower() == wanted:
                    names.update(values)
        return tuple(sorted(names))
