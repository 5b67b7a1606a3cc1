"""HPCLDAPAuthenticator: HPC credentials from LDAP, authorization by client address, and an
auth_state (uid/gid, HOME, WORK, SCRATCH, projects) for the spawner.

One login goes through these steps, each refusing on its own:

1. the login must match ``username_pattern`` exactly (never rewritten) and the password must
   not be blank -- checked before any LDAP traffic (an empty password is an anonymous bind);
2. the client address (the TCP peer, or ``X-Forwarded-For`` read right to left when the peer
   is a trusted proxy) must lie in some configured network -- also before LDAP;
3. the directory (in a worker thread, with timeouts) must find exactly one entry whose login
   attribute equals the login and accept the password;
4. the entry must give a usable account (uid/gid numbers, clean absolute paths);
5. the address must be allowed for this user (global networks or one of the user's groups).

Refusals at 1, 3 and 4 show JupyterHub's usual "Invalid username or password" (403); a refused
address is a 403 naming the address; an unreachable directory is a 503 asking to retry later.
Every refusal is logged with its reason. auth_state is only persisted when the hub has
``c.Authenticator.enable_auth_state = True`` and ``JUPYTERHUB_CRYPT_KEY`` set.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyterhub.auth import Authenticator
from tornado import web
from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode, validate

from .authstate import AccountError, AccountSpec, HPCAuthState, build_auth_state, check_template
from .directory import (
    DirectoryAccount,
    DirectorySettings,
    DirectoryUnavailable,
    LdapDirectory,
    Refused,
)
from .logins import (
    DEFAULT_LOGIN_PATTERN,
    compile_login_pattern,
    loggable,
    login_refusal,
    password_refusal,
)
from .netpolicy import EVERYWHERE, ClientAddress, NetworkPolicy, client_address, parse_networks

UNAVAILABLE_MESSAGE = (
    "Login is temporarily unavailable: the user directory cannot be reached. "
    "Please try again in a few minutes."
)


def request_peer(handler: Any) -> str:
    """The direct TCP peer of the request.

    JupyterHub runs Tornado with ``xheaders=True``, so ``request.remote_ip`` has already been
    rewritten from ``X-Forwarded-For``/``X-Real-Ip`` sent by *anyone*: it cannot be trusted.
    The socket's address is kept by Tornado's connection context (``_orig_remote_ip``; it is
    ``0.0.0.0`` for a Unix socket). Objects without a Tornado connection (tests) fall back to
    ``request.remote_ip``.
    """
    request = handler.request
    context = getattr(getattr(request, "connection", None), "context", None)
    original = getattr(context, "_orig_remote_ip", None)
    if isinstance(original, str):
        return original
    return str(request.remote_ip)


def forwarded_for(handler: Any) -> list[str]:
    """Every ``X-Forwarded-For`` header value of the request, in order."""
    headers = handler.request.headers
    get_list = getattr(headers, "get_list", None)
    if get_list is not None:
        return [str(v) for v in get_list("X-Forwarded-For")]
    value = headers.get("X-Forwarded-For")
    return [str(value)] if value is not None else []


def _check_login_template(template: str, what: str) -> str:
    if template and "{login}" not in template:
        raise TraitError(f"{what} must contain {{login}}: {template!r}")
    try:
        template.format(login="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise TraitError(f"{what} may only use the field {{login}}: {exc!r}") from None
    return template


class HPCLDAPAuthenticator(Authenticator):  # type: ignore[misc]
    """Log in with HPC (LDAP) credentials; see docs/authenticator.md."""

    # -- directory ----------------------------------------------------------------------

    server_urls = List(
        Unicode(),
        help="""LDAP server URLs, tried in order (``ldap://host:389``, ``ldaps://host:636``).

        ``ldaps://`` uses TLS from the first byte; for ``ldap://`` set ``start_tls``.
        """,
    ).tag(config=True)

    start_tls = Bool(
        False, help="Upgrade ``ldap://`` connections with StartTLS before binding."
    ).tag(config=True)

    tls_ca_file = Unicode(
        "", help="PEM file of CA certificates to verify the server with (default: system CAs)."
    ).tag(config=True)

    tls_verify = Bool(
        True, help="Verify the server's certificate (ldaps and StartTLS). Only disable in tests."
    ).tag(config=True)

    connect_timeout = Float(
        5.0, help="Seconds to wait for a TCP connection to one LDAP server."
    ).tag(config=True)

    receive_timeout = Int(
        10,
        help="""Seconds (whole: ldap3 sets it as a socket option) to wait for the answer to
        one LDAP request.""",
    ).tag(config=True)

    login_timeout = Float(
        30.0,
        help="""Upper bound, in seconds, on the whole directory exchange of one login; past it
        the login is refused as 'directory unavailable' (503).""",
    ).tag(config=True)

    ldap_workers = Int(
        4, help="Threads running LDAP calls (off the hub's event loop); logins beyond wait."
    ).tag(config=True)

    bind_dn = Unicode(
        "",
        help="""Service account DN for search-then-bind (empty: search anonymously).
        Ignored when ``bind_dn_template`` is set.""",
    ).tag(config=True)

    bind_password = Unicode(
        "", help="Password of ``bind_dn``; must not be blank when ``bind_dn`` is set."
    ).tag(config=True)

    bind_dn_template = Unicode(
        "",
        help="""Bind directly as this DN instead of searching, e.g.
        ``uid={login},ou=people,dc=hpc,dc=test``; ``{login}`` is RDN-escaped.""",
    ).tag(config=True)

    user_search_base = Unicode("", help="Subtree searched for the user's entry.").tag(config=True)

    user_search_filter = Unicode(
        "(&(objectClass=posixAccount)(uid={login}))",
        help="Filter finding the user's entry; ``{login}`` is filter-escaped.",
    ).tag(config=True)

    login_attribute = Unicode(
        "uid",
        help="""Attribute of the entry that must equal the typed login exactly (LDAP compares
        case-insensitively; the hub does not, so one entry is always one hub user).""",
    ).tag(config=True)

    group_search_base = Unicode(
        "", help="Subtree searched for the user's groups (empty: the user has no groups)."
    ).tag(config=True)

    group_search_filter = Unicode(
        "(&(objectClass=posixGroup)(memberUid={login}))",
        help="Filter finding the groups the user is a member of; ``{login}`` is filter-escaped.",
    ).tag(config=True)

    group_name_attribute = Unicode("cn", help="Attribute naming a group.").tag(config=True)

    # -- logins -------------------------------------------------------------------------

    username_pattern = Unicode(
        DEFAULT_LOGIN_PATTERN,
        help="""Regular expression a login must match as a whole. Logins are never lowercased
        or stripped: anything else is refused. Whatever the pattern, NUL, whitespace,
        ``* ( ) \\ , = + < > ; " # /`` are refused.""",
    ).tag(config=True)

    # -- account (auth_state) -----------------------------------------------------------

    uid_number_attribute = Unicode("uidNumber", help="Attribute with the Unix uid.").tag(
        config=True
    )
    gid_number_attribute = Unicode("gidNumber", help="Attribute with the primary Unix gid.").tag(
        config=True
    )
    home_attribute = Unicode(
        "homeDirectory", help="Attribute with HOME (empty: always use ``home_template``)."
    ).tag(config=True)
    work_attribute = Unicode("", help="Attribute with WORK (empty: use ``work_template``).").tag(
        config=True
    )
    scratch_attribute = Unicode(
        "", help="Attribute with SCRATCH (empty: use ``scratch_template``)."
    ).tag(config=True)
    home_template = Unicode(
        "/home/{login}",
        help="HOME when the entry has no home attribute; fields {login} {uid_number} {gid_number}.",
    ).tag(config=True)
    work_template = Unicode(
        "/work/{login}", help="WORK when the entry has no work attribute; same fields."
    ).tag(config=True)
    scratch_template = Unicode(
        "/scratch/{login}", help="SCRATCH when the entry has no scratch attribute; same fields."
    ).tag(config=True)
    project_groups = Unicode(
        "proj-*",
        help="""Glob (case-sensitive) selecting which of the user's LDAP groups are projects
        (Slurm accounts); empty: none.""",
    ).tag(config=True)
    projects_attribute = Unicode(
        "", help="Attribute of the user's entry listing more projects (empty: not used)."
    ).tag(config=True)
    admin_groups = List(
        Unicode(),
        help="""LDAP groups whose members are hub admins. When set, admin status follows the
        directory at every login (``admin_users`` still makes admins).""",
    ).tag(config=True)
    allowed_groups = List(
        Unicode(),
        help="""LDAP groups whose members may use the hub (in addition to ``allowed_users``).
        Use ``allow_all = True`` to let every directory user in.""",
    ).tag(config=True, allow_config=True)

    # -- networks -------------------------------------------------------------------------

    allowed_networks = List(
        Unicode(),
        list(EVERYWHERE),
        help="""CIDR networks everyone may log in from (default: anywhere). Set ``[]`` to allow
        only the networks of ``group_allowed_networks``.""",
    ).tag(config=True)
    group_allowed_networks = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        help="""Extra CIDR networks per LDAP group: members of a group may also log in from
        its networks, e.g. ``{"proj-bio": ["192.0.2.0/24"]}``.""",
    ).tag(config=True)
    trusted_proxies = List(
        Unicode(),
        help="""CIDR networks of proxies (Traefik, a load balancer) whose ``X-Forwarded-For``
        is honoured. From any other peer the header is ignored.""",
    ).tag(config=True)

    # -- validation ---------------------------------------------------------------------

    @validate("username_pattern")
    def _valid_pattern(self, proposal: dict[str, Any]) -> str:
        try:
            compile_login_pattern(proposal["value"])
        except re.error as exc:
            raise TraitError(f"username_pattern is not a regular expression: {exc}") from None
        return str(proposal["value"])

    @validate("allowed_networks", "trusted_proxies")
    def _valid_networks(self, proposal: dict[str, Any]) -> list[str]:
        try:
            parse_networks(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"{proposal['trait'].name}: {exc}") from None
        return list(proposal["value"])

    @validate("group_allowed_networks")
    def _valid_group_networks(self, proposal: dict[str, Any]) -> dict[str, list[str]]:
        try:
            NetworkPolicy.from_config((), proposal["value"])
        except ValueError as exc:
            raise TraitError(f"group_allowed_networks: {exc}") from None
        return dict(proposal["value"])

    @validate("home_template", "work_template", "scratch_template")
    def _valid_template(self, proposal: dict[str, Any]) -> str:
        try:
            check_template(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"{proposal['trait'].name}: {exc}") from None
        return str(proposal["value"])

    @validate("user_search_filter", "group_search_filter", "bind_dn_template")
    def _valid_login_template(self, proposal: dict[str, Any]) -> str:
        return _check_login_template(proposal["value"], proposal["trait"].name)

    # -- collaborators (built on first use, not in __init__) ------------------------------

    _directory: LdapDirectory | None = None
    _executor: ThreadPoolExecutor | None = None

    def directory_settings(self) -> DirectorySettings:
        """The directory half of the configuration."""
        return DirectorySettings(
            urls=tuple(self.server_urls),
            start_tls=self.start_tls,
            tls_ca_file=self.tls_ca_file,
            tls_verify=self.tls_verify,
            connect_timeout=self.connect_timeout,
            receive_timeout=self.receive_timeout,
            bind_dn=self.bind_dn,
            bind_password=self.bind_password,
            bind_dn_template=self.bind_dn_template,
            user_search_base=self.user_search_base,
            user_search_filter=self.user_search_filter,
            user_attributes=tuple(
                sorted({*self.account_spec().attributes(), self.login_attribute})
            ),
            login_attribute=self.login_attribute,
            group_search_base=self.group_search_base,
            group_search_filter=self.group_search_filter,
            group_name_attribute=self.group_name_attribute,
        )

    def account_spec(self) -> AccountSpec:
        """The auth_state half of the configuration."""
        return AccountSpec(
            uid_number_attribute=self.uid_number_attribute,
            gid_number_attribute=self.gid_number_attribute,
            home_attribute=self.home_attribute,
            work_attribute=self.work_attribute,
            scratch_attribute=self.scratch_attribute,
            home_template=self.home_template,
            work_template=self.work_template,
            scratch_template=self.scratch_template,
            project_groups=self.project_groups,
            projects_attribute=self.projects_attribute,
            admin_groups=tuple(self.admin_groups),
        )

    def network_policy(self) -> NetworkPolicy:
        """The allowed networks, parsed."""
        return NetworkPolicy.from_config(self.allowed_networks, self.group_allowed_networks)

    def configuration_problem(self) -> str | None:
        """What makes the directory configuration unusable, or None."""
        if not self.server_urls:
            return "server_urls is empty"
        if not self.bind_dn_template and not self.user_search_base:
            return "set user_search_base (search-then-bind) or bind_dn_template"
        if self.bind_dn and not self.bind_password.strip() and not self.bind_dn_template:
            return "bind_dn is set but bind_password is blank (that would be an anonymous bind)"
        return None

    def _ldap(self) -> tuple[LdapDirectory, ThreadPoolExecutor]:
        if self._directory is None:
            self._directory = LdapDirectory(self.directory_settings())
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.ldap_workers, thread_name_prefix="hpchub-ldap"
            )
        return self._directory, self._executor

    # -- JupyterHub hooks ---------------------------------------------------------------

    def check_allow_config(self) -> None:
        """At hub start-up: warn about plain-text LDAP, fail loudly on unusable config."""
        super().check_allow_config()
        problem = self.configuration_problem()
        if problem:
            self.log.error("HPCLDAPAuthenticator is misconfigured: %s", problem)
        plain = [u for u in self.server_urls if u.lower().startswith("ldap://")]
        if plain and not self.start_tls:
            self.log.warning(
                "LDAP passwords travel in clear text to %s (use ldaps:// or start_tls)", plain
            )

    def normalize_username(self, username: str) -> str:
        """Identity: logins are validated, never rewritten (see module docs)."""
        return username

    def validate_username(self, username: str) -> bool:
        """JupyterHub's checks plus the login rules of :mod:`hpchub_hub.logins`."""
        if not super().validate_username(username):
            return False
        return login_refusal(username, compile_login_pattern(self.username_pattern)) is None

    def check_allowed(self, username: str, authentication: dict[str, Any] | None = None) -> bool:
        """Members of ``allowed_groups`` are allowed, as well as ``allowed_users``."""
        state = (authentication or {}).get("auth_state") or {}
        if self.allowed_groups and set(self.allowed_groups) & set(state.get("groups", ())):
            return True
        return bool(super().check_allowed(username, authentication))

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> dict[str, Any] | None:
        """The login steps described in the module docstring."""
        login, password = data.get("username"), data.get("password")
        refusal = login_refusal(login, compile_login_pattern(self.username_pattern))
        if refusal is None:
            refusal = password_refusal(password)
        if refusal is not None or not isinstance(login, str) or not isinstance(password, str):
            self.log.warning("Login refused for %s: %s (no LDAP request)", loggable(login), refusal)
            return None

        client = client_address(
            request_peer(handler), forwarded_for(handler), parse_networks(self.trusted_proxies)
        )
        policy = self.network_policy()
        address = client.address
        if address is None or not policy.may_try(address):
            raise self._network_refusal(login, client)

        account = await self._verify(login, password)
        if account is None:
            return None
        try:
            state = build_auth_state(
                login, account.dn, account.attributes, account.groups, self.account_spec()
            )
        except AccountError as exc:
            self.log.warning("Login refused for %s: unusable LDAP entry: %s", login, exc)
            return None

        if not policy.allows(address, state["groups"]):
            raise self._network_refusal(login, client)
        self.log.info(
            "Login of %s from %s (%s): projects %s%s",
            login,
            address,
            client.reason,
            state["projects"] or "none",
            ", admin" if state["admin"] else "",
        )
        return self._auth_model(state)

    # -- steps ----------------------------------------------------------------------------

    def _network_refusal(self, login: str, client: ClientAddress) -> web.HTTPError:
        shown = str(client.address) if client.address is not None else "unknown"
        self.log.warning(
            "Login refused for %s: address %s (%s) is not in an allowed network",
            login,
            shown,
            client.reason,
        )
        return web.HTTPError(403, f"Login is not permitted from your network address ({shown}).")

    async def _verify(self, login: str, password: str) -> DirectoryAccount | None:
        problem = self.configuration_problem()
        if problem:
            self.log.error(
                "Login of %s impossible: authenticator misconfigured: %s", login, problem
            )
            raise web.HTTPError(503, UNAVAILABLE_MESSAGE)
        directory, executor = self._ldap()
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(executor, directory.verify, login, password),
                timeout=self.login_timeout,
            )
        except Refused as exc:
            self.log.warning("Login refused for %s: %s", login, exc)
            return None
        except (DirectoryUnavailable, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {self.login_timeout:g}s"
            self.log.error(
                "Login of %s failed: LDAP directory %s unavailable: %s",
                login,
                ", ".join(self.server_urls),
                reason,
            )
            raise web.HTTPError(503, UNAVAILABLE_MESSAGE) from None

    def _auth_model(self, state: HPCAuthState) -> dict[str, Any]:
        admin: bool | None = None
        if state["admin"] or state["login"] in self.admin_users:
            admin = True
        elif self.admin_groups:
            admin = False
        model: dict[str, Any] = {"name": state["login"], "auth_state": dict(state), "admin": admin}
        if self.manage_groups:
            model["groups"] = list(state["groups"])
        return model
