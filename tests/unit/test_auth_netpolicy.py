"""Decision table: who is the client (X-Forwarded-For) and may it log in (CIDR rules)."""

from __future__ import annotations

import ipaddress

import pytest

from hpchub_hub.netpolicy import (
    NetworkPolicy,
    client_address,
    parse_address,
    parse_networks,
)

PROXIES = parse_networks(["10.0.0.2/32", "10.0.1.0/24", "fd00::/64"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # untrusted peer: the header is ignored whatever it says
        ("203.0.113.7", [], "203.0.113.7"),
        ("203.0.113.7", ["10.9.9.9"], "203.0.113.7"),
        ("203.0.113.7", ["127.0.0.1, 10.0.0.2"], "203.0.113.7"),
        ("203.0.113.7", ["garbage"], "203.0.113.7"),
        ("2001:db8::5", ["192.0.2.1"], "2001:db8::5"),
        # trusted proxy: right-most untrusted hop
        ("10.0.0.2", ["192.0.2.1"], "192.0.2.1"),
        ("10.0.0.2", ["6.6.6.6, 192.0.2.1"], "192.0.2.1"),
        ("10.0.0.2", ["6.6.6.6, 192.0.2.1, 10.0.1.5"], "192.0.2.1"),
        ("10.0.0.2", ["6.6.6.6", "192.0.2.1"], "192.0.2.1"),  # two header lines
        ("10.0.0.2", [" 192.0.2.1 "], "192.0.2.1"),
        ("10.0.0.2", ["192.0.2.1:54321"], "192.0.2.1"),
        ("10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.0.0.2", ["2001:db8::1"], "2001:db8::1"),
        ("fd00::1", ["2001:db8::1"], "2001:db8::1"),
        ("::ffff:10.0.0.2", ["192.0.2.1"], "192.0.2.1"),  # dual-stack socket
        ("10.0.0.2", ["::ffff:192.0.2.1"], "192.0.2.1"),
        ("10.0.0.2", [], "10.0.0.2"),  # the proxy itself (health checks)
        ("10.0.0.2", ["10.0.1.7, 10.0.1.8"], "10.0.1.7"),  # all hops trusted: left-most
        # malformed entries: left of the first untrusted hop they do not matter ...
        ("10.0.0.2", ["garbage, 192.0.2.1"], "192.0.2.1"),
        ("10.0.0.2", ["unknown, 192.0.2.1"], "192.0.2.1"),
    ],
)
def test_client_address(peer: str, xff: list[str], expected: str) -> None:
    result = client_address(peer, xff, PROXIES)
    assert result.address == ipaddress.ip_address(expected), result.reason


@pytest.mark.parametrize(
    ("peer", "xff"),
    [
        # ... but right of it they make the chain untrustworthy
        ("10.0.0.2", ["192.0.2.1, garbage"]),
        ("10.0.0.2", ["192.0.2.1, "]),
        ("10.0.0.2", [""]),
        ("10.0.0.2", ["unknown"]),
        ("10.0.0.2", ["192.0.2.1:port"]),
        ("10.0.0.2", ["[2001:db8::1"]),
        ("10.0.0.2", ["[2001:db8::1]x"]),
        ("10.0.0.2", ["999.1.1.1"]),
        ("10.0.0.2", ["1.2.3.4/24"]),
        ("10.0.0.2", ["x" * 5000]),
        ("not-an-ip", []),
        ("", []),
    ],
)
def test_untrustworthy_chain_gives_no_address(peer: str, xff: list[str]) -> None:
    result = client_address(peer, xff, PROXIES)
    assert result.address is None
    assert result.reason


def test_no_trusted_proxies_means_header_never_read() -> None:
    assert client_address("10.0.0.2", ["192.0.2.1"], ()).address == ipaddress.ip_address("10.0.0.2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("1.2.3.4:", None),
        ("1.2.3", None),
        ("", None),
        ("[]", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    address = parse_address(text)
    assert address == (ipaddress.ip_address(expected) if expected else None)


POLICY = NetworkPolicy.from_config(
    ["192.0.2.0/24", "2001:db8:1::/48"],
    {"proj-bio": ["198.51.100.0/24"], "hpc-admins": ["203.0.113.10", "2001:db8:2::/48"]},
)


@pytest.mark.parametrize(
    ("address", "groups", "may_try", "allowed"),
    [
        ("192.0.2.9", [], True, True),
        ("2001:db8:1::9", [], True, True),
        ("198.51.100.9", ["proj-bio"], True, True),
        ("198.51.100.9", ["proj-astro"], True, False),
        ("198.51.100.9", [], True, False),
        ("203.0.113.10", ["hpc-admins"], True, True),
        ("203.0.113.11", ["hpc-admins"], False, False),
        ("2001:db8:2::1", ["hpc-admins"], True, True),
        ("2001:db8:2::1", ["proj-bio"], True, False),
        ("8.8.8.8", ["proj-bio", "hpc-admins"], False, False),
        ("::ffff:192.0.2.9", [], False, False),  # parse_address maps these; raw v6 never matches v4
    ],
)
def test_policy(address: str, groups: list[str], may_try: bool, allowed: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert POLICY.may_try(ip) is may_try
    assert POLICY.allows(ip, groups) is allowed


def test_default_everywhere_and_empty_nowhere() -> None:
    anywhere = NetworkPolicy.from_config(["0.0.0.0/0", "::/0"], {})
    nowhere = NetworkPolicy.from_config([], {})
    for text in ("8.8.8.8", "2001:db8::1"):
        ip = ipaddress.ip_address(text)
        assert anywhere.allows(ip, []) and not nowhere.may_try(ip)


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "10.0.0.0/33", "nonsense", "", "fd00::/129"])
def test_bad_networks_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="CIDR"):
        parse_networks([bad])
