"""The authenticator's decisions that need no directory: configuration checks, refusals
before any LDAP traffic, allow/admin rules."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tornado import web
from tornado.httputil import HTTPHeaders
from traitlets import TraitError

from hpchub_hub.auth import HPCLDAPAuthenticator, forwarded_for, request_peer


def handler(peer: str = "192.0.2.10", xff: list[str] | None = None) -> Any:
    headers = HTTPHeaders()
    for value in xff or []:
        headers.add("X-Forwarded-For", value)
    return SimpleNamespace(request=SimpleNamespace(remote_ip=peer, headers=headers))


def authenticator(**config: Any) -> HPCLDAPAuthenticator:
    base: dict[str, Any] = {
        "server_urls": ["ldap://127.0.0.1:9"],
        "user_search_base": "ou=people,dc=hpc,dc=test",
    }
    return HPCLDAPAuthenticator(**{**base, **config})


@pytest.mark.parametrize(
    "data",
    [
        {"username": "alice", "password": ""},
        {"username": "alice", "password": "   "},
        {"username": "alice", "password": "\t\n"},
        {"username": "alice"},
        {"username": "*", "password": "x"},
        {"username": "alice)(|(uid=*", "password": "x"},
        {"username": "ALICE", "password": "x"},
        {"username": "alice ", "password": "x"},
        {"password": "x"},
    ],
)
async def test_refused_before_any_ldap(data: dict[str, str]) -> None:
    auth = authenticator()
    assert await auth.authenticate(handler(), data) is None
    assert auth._directory is None and auth._executor is None  # nothing LDAP was even built


async def test_address_outside_every_network_refused_before_ldap() -> None:
    auth = authenticator(allowed_networks=["10.0.0.0/8"], group_allowed_networks={"g": ["::1"]})
    with pytest.raises(web.HTTPError) as info:
        await auth.authenticate(handler("192.0.2.10"), {"username": "alice", "password": "pw"})
    assert info.value.status_code == 403
    assert "192.0.2.10" in str(info.value.log_message)
    assert auth._directory is None


async def test_malformed_forwarded_chain_refused() -> None:
    auth = authenticator(trusted_proxies=["127.0.0.1/32"])
    with pytest.raises(web.HTTPError) as info:
        await auth.authenticate(
            handler("127.0.0.1", ["1.2.3.4, bogus"]), {"username": "alice", "password": "pw"}
        )
    assert info.value.status_code == 403


async def test_misconfigured_directory_is_503_not_traceback() -> None:
    auth = HPCLDAPAuthenticator()
    with pytest.raises(web.HTTPError) as info:
        await auth.authenticate(handler(), {"username": "alice", "password": "pw"})
    assert info.value.status_code == 503


@pytest.mark.parametrize(
    ("trait", "value"),
    [
        ("allowed_networks", ["10.0.0.1/8"]),
        ("trusted_proxies", ["proxy.example"]),
        ("group_allowed_networks", {"g": ["300.0.0.0/8"]}),
        ("work_template", "/work/{user}"),
        ("scratch_template", "scratch/{login}"),
        ("user_search_filter", "(uid=alice)"),
        ("bind_dn_template", "uid={0},dc=x"),
        ("username_pattern", "[a-z"),
    ],
)
def test_bad_configuration_is_refused_at_load(trait: str, value: object) -> None:
    with pytest.raises(TraitError):
        HPCLDAPAuthenticator(**{trait: value})


def test_configuration_problems() -> None:
    assert HPCLDAPAuthenticator().configuration_problem() == "server_urls is empty"
    assert "anonymous" in (
        authenticator(bind_dn="cn=r", bind_password=" ").configuration_problem() or ""
    )
    assert authenticator(bind_dn="cn=r", bind_password="pw").configuration_problem() is None
    assert (
        HPCLDAPAuthenticator(
            server_urls=["ldap://x"], bind_dn_template="uid={login},dc=x"
        ).configuration_problem()
        is None
    )


def test_usernames_are_never_rewritten() -> None:
    auth = authenticator()
    assert auth.normalize_username("ALICE") == "ALICE"
    assert auth.validate_username("alice")
    for bad in ("ALICE", "alice ", "a*", "a,b", "a=b", "."):
        assert not auth.validate_username(bad)


def test_allowed_groups_and_admin_model() -> None:
    auth = authenticator(
        allowed_groups=["hpcusers"], admin_groups=["hpc-admins"], admin_users={"dave"}
    )
    state: Any = {"login": "alice", "groups": ["hpcusers"], "admin": False}
    assert auth.check_allowed("alice", {"auth_state": state})
    assert not auth.check_allowed("alice", {"auth_state": {**state, "groups": ["other"]}})
    assert auth.any_allow_config

    def admin(a: HPCLDAPAuthenticator, **change: Any) -> Any:
        changed: Any = {**state, **change}
        return a._auth_model(changed)["admin"]

    assert admin(auth) is False  # admin_groups set: directory decides, every login
    assert admin(auth, admin=True) is True
    assert admin(auth, login="dave") is True  # admin_users still counts
    assert admin(authenticator()) is None  # no admin_groups: JupyterHub's is_admin decides


def test_peer_comes_from_the_socket_not_the_rewritten_remote_ip() -> None:
    # JupyterHub runs Tornado with xheaders=True: remote_ip already follows a spoofable XFF.
    context = SimpleNamespace(_orig_remote_ip="203.0.113.5")
    request = SimpleNamespace(
        remote_ip="10.0.0.1", headers=HTTPHeaders(), connection=SimpleNamespace(context=context)
    )
    assert request_peer(SimpleNamespace(request=request)) == "203.0.113.5"
    assert forwarded_for(handler(xff=["1.1.1.1", "2.2.2.2"])) == ["1.1.1.1", "2.2.2.2"]
    plain = SimpleNamespace(request=SimpleNamespace(headers={"X-Forwarded-For": "3.3.3.3"}))
    assert forwarded_for(plain) == ["3.3.3.3"]


def test_every_trait_is_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "authenticator.md").read_text()
    own = set(HPCLDAPAuthenticator.class_own_traits(config=True)) | {"username_pattern"}
    missing = sorted(name for name in own if f"| `{name}` |" not in docs)
    assert not missing, f"traits missing from docs/authenticator.md: {missing}"
