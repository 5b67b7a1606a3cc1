"""HPCLDAPAuthenticator against the stack's real slapd.

Calls go through ``get_authenticated_user`` (what the hub's login handler calls) with a
minimal request object: the direct peer in ``remote_ip`` and real Tornado headers. "No bind"
claims are proved with slapd's own log: its connection (ACCEPT) and BIND lines do not move.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import ldap3
import pytest
from tornado import web
from tornado.httputil import HTTPHeaders

from hpchub_hub.auth import HPCLDAPAuthenticator
from hpchub_stack import users
from hpchub_stack.ldap import LdapDirectory
from hpchub_stack.process import free_port, wait_until

LOG = logging.getLogger("test.authenticator")
ALICE = users.user("alice")
BOB = users.user("bob")
CAROL = users.user("carol")
OFFICE = "192.0.2.0/24"
"""The network everyone may log in from in these tests."""


def request(peer: str = "192.0.2.10", xff: list[str] | None = None) -> Any:
    headers = HTTPHeaders()
    for value in xff or []:
        headers.add("X-Forwarded-For", value)
    return SimpleNamespace(request=SimpleNamespace(remote_ip=peer, headers=headers))


def make_authenticator(ldap: LdapDirectory, **config: Any) -> HPCLDAPAuthenticator:
    base: dict[str, Any] = {
        "log": LOG,
        "server_urls": [ldap.url],
        "bind_dn": ldap.reader_dn,
        "bind_password": ldap.reader_password,
        "user_search_base": ldap.people_dn,
        "group_search_base": ldap.groups_dn,
        "admin_groups": ["hpc-admins"],
        "allowed_groups": ["hpcusers"],
        "allowed_networks": [OFFICE],
        "connect_timeout": 2.0,
        "receive_timeout": 2,
    }
    return HPCLDAPAuthenticator(**{**base, **config})


class SlapdLog:
    """Counts of connections accepted and binds received, read from slapd's stats log."""

    def __init__(self, ldap: LdapDirectory) -> None:
        self.ldap = ldap
        self.path = ldap.dir / "slapd.log"

    def counts(self) -> tuple[int, int]:
        text = self.path.read_text(errors="replace")
        return (
            len(re.findall(r" ACCEPT from ", text)),
            len(re.findall(r" BIND dn=\S* method=", text)),
        )

    def since(self, before: tuple[int, int]) -> tuple[int, int]:
        """Connections and binds since ``before``, not counting one marker bind made now:
        once the marker shows in the log, anything earlier has been logged too (no sleep)."""
        marker = ldap3.Connection(
            ldap3.Server(self.ldap.url, get_info=ldap3.NONE),
            self.ldap.reader_dn,
            self.ldap.reader_password,
        )
        assert marker.bind()
        marker.unbind()
        wait_until(lambda: self.counts()[1] > before[1], timeout=5, what="marker bind logged")
        now = self.counts()
        return now[0] - before[0] - 1, now[1] - before[1] - 1


@pytest.fixture
def slapd_log(ldap: LdapDirectory) -> SlapdLog:
    return SlapdLog(ldap)


@pytest.fixture
def auth(ldap: LdapDirectory) -> HPCLDAPAuthenticator:
    return make_authenticator(ldap)


async def login(
    auth: HPCLDAPAuthenticator, username: str, password: str, handler: Any = None
) -> dict[str, Any] | None:
    data = {"username": username, "password": password}
    result: dict[str, Any] | None = await auth.get_authenticated_user(handler or request(), data)
    return result


# -- successful logins ----------------------------------------------------------------------


async def test_alice_logs_in_with_full_auth_state(
    auth: HPCLDAPAuthenticator, ldap: LdapDirectory
) -> None:
    model = await login(auth, "alice", ALICE.password)
    assert model is not None
    assert model["name"] == "alice"
    assert model["admin"] is False
    assert model["auth_state"] == {
        "version": 1,
        "login": "alice",
        "dn": ldap.user_dn("alice"),
        "uid_number": ALICE.uid,
        "gid_number": ALICE.gid,
        "home": ALICE.home,
        "work": "/work/alice",
        "scratch": "/scratch/alice",
        "projects": ["proj-astro", "proj-gpu"],
        "groups": ["hpcusers", "proj-astro", "proj-gpu"],
        "admin": False,
    }


async def test_admin_comes_from_the_ldap_group(auth: HPCLDAPAuthenticator) -> None:
    model = await login(auth, "carol", CAROL.password)
    assert model is not None
    assert model["admin"] is True
    assert model["auth_state"]["projects"] == ["proj-astro"]


async def test_bind_dn_template_mode(ldap: LdapDirectory) -> None:
    auth = make_authenticator(
        ldap, bind_dn="", bind_password="", bind_dn_template=f"uid={{login}},{ldap.people_dn}"
    )
    model = await login(auth, "bob", BOB.password)
    assert model is not None
    assert model["auth_state"]["projects"] == ["proj-bio"]
    assert await login(auth, "bob", "wrong") is None


async def test_trusted_proxy_forwarded_address_is_honoured(ldap: LdapDirectory) -> None:
    auth = make_authenticator(ldap, trusted_proxies=["10.0.0.2/32"])
    # The proxy itself is not in an allowed network: only the forwarded client address is.
    via_proxy = request("10.0.0.2", ["6.6.6.6, 192.0.2.77"])
    model = await login(auth, "alice", ALICE.password, via_proxy)
    assert model is not None and model["name"] == "alice"


async def test_ipv6_client_in_allowed_network(ldap: LdapDirectory) -> None:
    auth = make_authenticator(ldap, allowed_networks=["2001:db8:1::/48"])
    assert await login(auth, "alice", ALICE.password, request("2001:db8:1::5")) is not None


async def test_per_group_network_admits_its_members(ldap: LdapDirectory) -> None:
    auth = make_authenticator(ldap, group_allowed_networks={"proj-bio": ["198.51.100.0/24"]})
    model = await login(auth, "bob", BOB.password, request("198.51.100.7"))
    assert model is not None and model["name"] == "bob"


# -- refusals -------------------------------------------------------------------------------


async def test_wrong_password_refused(
    auth: HPCLDAPAuthenticator, slapd_log: SlapdLog, caplog: pytest.LogCaptureFixture
) -> None:
    before = slapd_log.counts()
    assert await login(auth, "alice", "not-" + ALICE.password) is None
    assert "wrong password" in caplog.text
    # control for the "no bind" tests below: a real attempt shows in slapd's log (two
    # connections and binds: the service account's, then the user's)
    assert slapd_log.since(before) == (2, 2)


async def test_unknown_user_refused(
    auth: HPCLDAPAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    assert await login(auth, "mallory", "whatever-password") is None
    assert "no such user" in caplog.text


@pytest.mark.parametrize("password", ["", " ", "   ", "\t\n"])
async def test_blank_password_refused_without_any_bind(
    auth: HPCLDAPAuthenticator,
    slapd_log: SlapdLog,
    password: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = slapd_log.counts()
    assert await login(auth, "alice", password) is None
    assert slapd_log.since(before) == (0, 0)
    assert "no LDAP request" in caplog.text


@pytest.mark.parametrize(
    "username",
    [
        "*",
        ")(uid=*",
        "alice)(|(uid=*",
        "*)(uid=alice",
        "alice\x00",
        "\x00alice",
        "alice,ou=people",
        "uid=alice",
        "alice ",
        " alice",
        "ALICE",
        "Alice",
        "al*",
        "alice\\2a",
    ],
)
async def test_injection_usernames_refused_without_any_bind(
    auth: HPCLDAPAuthenticator, slapd_log: SlapdLog, username: str
) -> None:
    before = slapd_log.counts()
    # alice's real password: if anything reached the directory and matched alice, it would pass
    assert await login(auth, username, ALICE.password) is None
    assert slapd_log.since(before) == (0, 0)


async def test_outside_allowed_networks_refused(
    auth: HPCLDAPAuthenticator, slapd_log: SlapdLog, caplog: pytest.LogCaptureFixture
) -> None:
    before = slapd_log.counts()
    with pytest.raises(web.HTTPError) as info:
        await login(auth, "alice", ALICE.password, request("203.0.113.9"))
    assert info.value.status_code == 403
    assert "203.0.113.9" in str(info.value.log_message)
    assert "not in an allowed network" in caplog.text
    assert slapd_log.since(before) == (0, 0)  # refused before any LDAP traffic


async def test_spoofed_forwarded_for_from_untrusted_peer_ignored(ldap: LdapDirectory) -> None:
    auth = make_authenticator(ldap, trusted_proxies=["10.0.0.2/32"])
    spoofed = request("203.0.113.9", ["192.0.2.10"])  # claims an office address
    with pytest.raises(web.HTTPError) as info:
        await login(auth, "alice", ALICE.password, spoofed)
    assert info.value.status_code == 403
    assert "203.0.113.9" in str(info.value.log_message)


async def test_trusted_proxy_cannot_launder_a_refused_client(ldap: LdapDirectory) -> None:
    auth = make_authenticator(
        ldap, trusted_proxies=["10.0.0.2/32"], allowed_networks=[OFFICE, "10.0.0.0/8"]
    )
    # The proxy's own address is allowed, but the client it forwards is not.
    with pytest.raises(web.HTTPError) as info:
        await login(auth, "alice", ALICE.password, request("10.0.0.2", ["203.0.113.9"]))
    assert info.value.status_code == 403


async def test_per_group_network_refuses_non_members(
    ldap: LdapDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    auth = make_authenticator(ldap, group_allowed_networks={"proj-bio": ["198.51.100.0/24"]})
    with pytest.raises(web.HTTPError) as info:
        await login(auth, "alice", ALICE.password, request("198.51.100.7"))
    assert info.value.status_code == 403
    assert "198.51.100.7" in caplog.text


async def test_user_outside_allowed_groups_refused(ldap: LdapDirectory) -> None:
    auth = make_authenticator(ldap, allowed_groups=["proj-bio"])
    assert await login(auth, "alice", ALICE.password) is None
    assert await login(auth, "bob", BOB.password) is not None


async def test_service_account_with_wrong_password_is_unavailable(
    ldap: LdapDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    auth = make_authenticator(ldap, bind_password="wrong-reader-password")
    with pytest.raises(web.HTTPError) as info:
        await login(auth, "alice", ALICE.password)
    assert info.value.status_code == 503
    assert "service bind" in caplog.text


# -- directory down -------------------------------------------------------------------------


async def test_dead_port_refused_quickly_with_logged_error(
    ldap: LdapDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    auth = make_authenticator(ldap, server_urls=[f"ldap://127.0.0.1:{free_port()}"])
    started = time.monotonic()
    with caplog.at_level(logging.ERROR), pytest.raises(web.HTTPError) as info:
        await login(auth, "alice", ALICE.password)
    assert time.monotonic() - started < auth.connect_timeout + 1
    assert info.value.status_code == 503
    assert "try again" in str(info.value.log_message)
    assert any(
        "unavailable" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records
    )


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose kernel accepts connections but nobody ever answers (a hung slapd)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_silent_server_times_out_without_blocking_the_event_loop(
    ldap: LdapDirectory, silent_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    auth = make_authenticator(
        ldap,
        server_urls=[f"ldap://127.0.0.1:{silent_server}"],
        receive_timeout=1,
        login_timeout=5.0,
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(web.HTTPError) as info:
            await login(auth, "alice", ALICE.password)
    finally:
        task.cancel()
    elapsed = time.monotonic() - started
    assert info.value.status_code == 503
    assert elapsed < auth.login_timeout
    assert ticks >= elapsed / 0.05 * 0.5, f"event loop starved: {ticks} ticks in {elapsed:.1f}s"
    assert "unavailable" in caplog.text


async def test_second_server_used_when_first_is_down(ldap: LdapDirectory) -> None:
    auth = make_authenticator(ldap, server_urls=[f"ldap://127.0.0.1:{free_port()}", ldap.url])
    assert await login(auth, "alice", ALICE.password) is not None
