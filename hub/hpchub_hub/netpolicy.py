"""Authorization by client address: pure decisions, table-tested.

Two questions, answered without I/O:

1. **Who is the client?** The direct TCP peer, unless that peer is a configured trusted proxy;
   then ``X-Forwarded-For`` is read from the right and the first address that is not a trusted
   proxy is the client (every hop to its right was added by a proxy we trust; anything to its
   left may have been written by the client). A header from an untrusted peer is ignored
   entirely. A malformed entry met before an untrusted address means the chain cannot be
   trusted: no client address, login refused.
2. **May that address log in?** ``allowed_networks`` apply to everyone; ``group_networks``
   add networks for the members of an LDAP group (an allow-list, never a deny-list). Before
   any LDAP traffic, an address outside every configured network is refused at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

EVERYWHERE: tuple[str, ...] = ("0.0.0.0/0", "::/0")


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings (or bare addresses, meaning a /32 or /128) as networks.

    Host bits must be zero (``10.0.0.1/8`` is refused: it is almost always a typo).
    Raises ValueError naming the bad entry.
    """
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"not a network in CIDR notation: {value!r} ({exc})") from None
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """One address from a peer or an ``X-Forwarded-For`` entry, or None when malformed.

    Accepts ``[v6]`` and ``[v6]:port`` and ``v4:port`` (some proxies add ports); an
    IPv4-mapped IPv6 address (``::ffff:10.0.0.1``, what a dual-stack socket reports) becomes
    the IPv4 address so IPv4 rules apply to it.
    """
    text = text.strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not _is_port_suffix(text[end + 1 :])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port_suffix(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit()


def in_any(address: IPAddress, networks: Iterable[Network]) -> bool:
    """Whether ``address`` lies in one of ``networks`` (families never match each other)."""
    return any(address.version == net.version and address in net for net in networks)


@dataclass(frozen=True)
class ClientAddress:
    """The address a login is judged by, or why there is none."""

    address: IPAddress | None
    reason: str
    """How it was found ("direct peer", "X-Forwarded-For from trusted proxy 10.0.0.2"), or
    why it could not be ("malformed X-Forwarded-For entry ...")."""


def client_address(
    peer: str, forwarded_for: Sequence[str], trusted_proxies: Sequence[Network]
) -> ClientAddress:
    """The client's address given the direct peer and every ``X-Forwarded-For`` header value
    (in order received; each may hold a comma-separated list)."""
    peer_address = parse_address(peer)
    if peer_address is None:
        return ClientAddress(None, f"unparseable peer address {peer[:64]!r}")
    if not in_any(peer_address, trusted_proxies):
        if forwarded_for:
            return ClientAddress(peer_address, "direct peer (X-Forwarded-For ignored: untrusted)")
        return ClientAddress(peer_address, "direct peer")
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    if not hops:
        return ClientAddress(peer_address, "trusted proxy without X-Forwarded-For")
    leftmost: IPAddress | None = None
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return ClientAddress(None, f"malformed X-Forwarded-For entry {hop.strip()[:64]!r}")
        if not in_any(address, trusted_proxies):
            return ClientAddress(address, f"X-Forwarded-For from trusted proxy {peer_address}")
        leftmost = address
    return ClientAddress(leftmost, "X-Forwarded-For: every hop is a trusted proxy")


@dataclass(frozen=True)
class NetworkPolicy:
    """Allowed networks for everyone, plus extra networks per LDAP group."""

    everyone: tuple[Network, ...] = ()
    by_group: Mapping[str, tuple[Network, ...]] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls, everyone: Iterable[str], by_group: Mapping[str, Iterable[str]]
    ) -> NetworkPolicy:
        """Parse CIDR strings; raises ValueError naming the bad entry."""
        return cls(
            everyone=parse_networks(everyone),
            by_group={group: parse_networks(nets) for group, nets in by_group.items()},
        )

    def may_try(self, address: IPAddress) -> bool:
        """Whether someone at ``address`` could be allowed at all (before knowing who)."""
        return in_any(address, self.everyone) or any(
            in_any(address, nets) for nets in self.by_group.values()
        )

    def allows(self, address: IPAddress, groups: Iterable[str]) -> bool:
        """Whether a member of ``groups`` may log in from ``address``."""
        if in_any(address, self.everyone):
            return True
        return any(in_any(address, self.by_group.get(group, ())) for group in groups)
