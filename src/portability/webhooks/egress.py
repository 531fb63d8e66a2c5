"""Where webhook requests may go: HTTPS outside development, public addresses only.

A webhook URL is chosen by a third party, and the worker posts to it from inside the
operator's network. Without rules, an app could register ``http://169.254.169.254/...`` (the
cloud metadata service), ``http://10.0.0.5/admin`` or a name that resolves there, and have
the worker make requests on its behalf (server-side request forgery). So:

- **Scheme.** Outside development mode only ``https://`` URLs are accepted, at registration
  and again before each request.
- **Addresses.** The worker resolves the host itself and refuses cloud metadata addresses
  (169.254.169.254 and the like), loopback, private (RFC 1918, RFC 6598 shared/CGNAT, IPv6
  unique-local), link-local, multicast, unspecified and reserved addresses, including their
  IPv4-mapped, NAT64 and 6to4 IPv6 forms. ``webhook_allow_loopback`` (default: on in
  development mode only) lets loopback through, ``webhook_allow_private`` (default off)
  private ranges for on-premises setups; nothing lets the other kinds through.
- **Names.** Well-known metadata hostnames are refused whatever they resolve to.
- **One resolution.** :class:`CheckedResolver` is the connector's resolver: it resolves, drops
  the refused addresses and hands aiohttp only the checked ones, which aiohttp then connects to.
  There is no second lookup an attacker's DNS could answer differently (DNS rebinding). TLS
  SNI and the ``Host`` header still carry the hostname. Literal IP hosts never reach a
  resolver in aiohttp, so :meth:`EgressPolicy.check_url` checks them before the request.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from typing import Final, Literal

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from portability.settings import Settings
from portability.webhooks.errors import WebhooksError

__all__ = [
    "AddressKind",
    "AddressesRefusedError",
    "CheckedResolver",
    "EgressPolicy",
    "EgressRefusedError",
    "address_kind",
]

log = logging.getLogger(__name__)

AddressKind = Literal[
    "metadata", "loopback", "private", "link-local", "multicast", "unspecified", "reserved"
]
"""Why an address is not public. ``None`` from :func:`address_kind` means public."""

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# First match wins: metadata services come first, since some sit inside ranges that a flag
# can allow (Alibaba's in CGNAT space, AWS's IPv6 one in ULA space) and must stay refused.
_V4_TABLE: Final[tuple[tuple[str, AddressKind], ...]] = (
    ("169.254.169.254/32", "metadata"),  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    ("169.254.170.2/32", "metadata"),  # AWS ECS task metadata
    ("100.100.100.200/32", "metadata"),  # Alibaba Cloud
    ("192.0.0.192/32", "metadata"),  # Oracle Cloud
    ("0.0.0.0/8", "unspecified"),  # "this network"; 0.0.0.0 reaches the local host
    ("10.0.0.0/8", "private"),  # RFC 1918
    ("100.64.0.0/10", "private"),  # RFC 6598 shared address space (CGNAT)
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),  # RFC 1918
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
    ("192.0.2.0/24", "reserved"),  # documentation (TEST-NET-1)
    ("192.88.99.0/24", "reserved"),  # former 6to4 relay anycast
    ("192.168.0.0/16", "private"),  # RFC 1918
    ("198.18.0.0/15", "reserved"),  # benchmarking
    ("198.51.100.0/24", "reserved"),  # documentation (TEST-NET-2)
    ("203.0.113.0/24", "reserved"),  # documentation (TEST-NET-3)
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # future use, and 255.255.255.255 broadcast
)
_V4_RULES: Final = tuple((ipaddress.IPv4Network(network), kind) for network, kind in _V4_TABLE)

# Also first match wins: ::/128 and ::1/128 come before the ::/96 block holding them.
_V6_TABLE: Final[tuple[tuple[str, AddressKind], ...]] = (
    ("fd00:ec2::254/128", "metadata"),  # AWS (IPv6)
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "reserved"),  # deprecated IPv4-compatible addresses
    ("::ffff:0:0:0/96", "reserved"),  # IPv4-translated (RFC 2765)
    ("64:ff9b:1::/48", "private"),  # local-use NAT64 (RFC 8215)
    ("100::/64", "reserved"),  # discard-only
    ("2001::/23", "reserved"),  # IETF protocol assignments: Teredo, benchmarking, ORCHID
    ("2001:db8::/32", "reserved"),  # documentation
    ("3fff::/20", "reserved"),  # documentation (RFC 9637)
    ("fc00::/7", "private"),  # unique local (ULA)
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private"),  # deprecated site-local
    ("ff00::/8", "multicast"),
)
_V6_RULES: Final = tuple((ipaddress.IPv6Network(network), kind) for network, kind in _V6_TABLE)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")

# Metadata services answer on these names (and on the addresses above); refused by name too,
# so that a resolver configured to map them elsewhere cannot open a way in.
_METADATA_HOSTS: Final = frozenset(
    {
        "metadata",
        "metadata.google.internal",  # Google Cloud
        "metadata.goog",  # Google Cloud
        "instance-data",  # AWS
        "instance-data.ec2.internal",  # AWS
        "metadata.azure.internal",  # Azure (alias of 169.254.169.254)
        "metadata.tencentyun.com",  # Tencent Cloud
    }
)

_DESCRIPTIONS: Final[dict[AddressKind, str]] = {
    "metadata": "a cloud metadata service address",
    "loopback": "a loopback address",
    "private": "a private address",
    "link-local": "a link-local address",
    "multicast": "a multicast address",
    "unspecified": "an unspecified address",
    "reserved": "a reserved address",
}


class EgressRefusedError(WebhooksError, ValueError):
    """A webhook URL or address the egress rules refuse; retrying the same URL cannot help."""

    retriable = False


class AddressesRefusedError(EgressRefusedError):
    """Every address a webhook host resolves to now is refused; DNS may answer otherwise later."""

    retriable = True


def address_kind(address: _IPAddress) -> AddressKind | None:
    """Why ``address`` is not a public unicast address, or None when it is.

    IPv6 forms that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::a.b.c.d``, 6to4 ``2002:AABB:CCDD::``) are judged by the IPv4 address they reach.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_kind(embedded)
        return next((kind for network, kind in _V6_RULES if address in network), None)
    return next((kind for network, kind in _V4_RULES if address in network), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The egress rules; the defaults are those of development mode (``Settings()``).

    Attributes:
        require_https: Refuse ``http://`` URLs (outside development mode).
        allow_loopback: Let loopback addresses through (the embedded demo, tests).
        allow_private: Let private ranges through (on-premises receivers).
    """

    require_https: bool = False
    allow_loopback: bool = True
    allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        """The policy ``development_mode``, ``webhook_allow_loopback`` and ``_private`` set."""
        return cls(
            require_https=not settings.development_mode,
            allow_loopback=settings.webhook_allow_loopback,
            allow_private=settings.webhook_allow_private,
        )

    def check_url(self, url: str) -> None:
        """Check what can be checked without DNS: scheme, metadata names, literal IP hosts.

        Raises:
            EgressRefusedError: The URL is refused; the message says why and what to change.
        """
        try:
            parsed = URL(url)
        except ValueError as error:
            raise EgressRefusedError(f"webhook URL {url!r} is malformed: {error}") from error
        if self.require_https and parsed.scheme != "https":
            raise EgressRefusedError(
                f"webhook URL {url!r} must use https: plain http is accepted in development "
                "mode only (PORTABILITY_DEVELOPMENT_MODE)"
            )
        host = parsed.raw_host
        if not host:
            raise EgressRefusedError(f"webhook URL {url!r} has no host")
        self.check_hostname(host)
        literal = _literal_address(host)
        if literal is not None:
            self.check_address(host, literal)

    def check_hostname(self, host: str) -> None:
        """Refuse well-known metadata service names, whatever they resolve to."""
        name = host.rstrip(".").lower()
        if name in _METADATA_HOSTS:
            raise EgressRefusedError(f"webhook host {host} is a cloud metadata service; refused")

    def check_address(self, host: str, address: str | _IPAddress) -> None:
        """Refuse ``address`` (which ``host`` resolved to) unless it is public or allowed.

        Raises:
            EgressRefusedError: E.g. "webhook host h resolves to 10.0.0.5, a private address;
                refused".
        """
        reason = self.refusal(host, address)
        if reason is not None:
            raise EgressRefusedError(reason)

    def refusal(self, host: str, address: str | _IPAddress) -> str | None:
        """Why ``address`` is refused for ``host``, or None when a request may go there.

        ``host`` is the URL's host: a name, or the address itself for a literal IP host.
        """
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return f"webhook host {host} resolves to {address!r}, not an IP address; refused"
        kind = address_kind(ip)
        if kind is None or self._allows(kind):
            return None
        shown = str(ip)
        if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)):
            shown = f"{ip} (IPv4 {embedded})"
        subject = (
            f"webhook address {shown} is"
            if _literal_address(host) is not None
            else f"webhook host {host} resolves to {shown},"
        )
        return f"{subject} {_DESCRIPTIONS[kind]}; refused{self._hint(kind)}"

    def _allows(self, kind: AddressKind) -> bool:
        return (kind == "loopback" and self.allow_loopback) or (
            kind == "private" and self.allow_private
        )

    @staticmethod
    def _hint(kind: AddressKind) -> str:
        if kind == "loopback":
            return " (PORTABILITY_WEBHOOK_ALLOW_LOOPBACK allows it, for development only)"
        if kind == "private":
            return " (PORTABILITY_WEBHOOK_ALLOW_PRIVATE allows it, for on-premises receivers)"
        return ""


def _literal_address(host: str) -> _IPAddress | None:
    """The address a literal IP host names, including legacy IPv4 forms like ``127.1``.

    ``inet_aton`` accepts the shorthand and numeric IPv4 forms (``2130706433``, ``0x7f.1``)
    that the socket layer would connect to: they are judged by the address they mean.
    """
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if not _NUMERIC_HOST.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


class CheckedResolver(AbstractResolver):
    """The connector's resolver: resolves once, returns only the addresses the policy allows.

    aiohttp connects to exactly the addresses a resolver returns, so the addresses checked
    here are the ones connected to: no later lookup can swap them (DNS rebinding).
    """

    def __init__(self, policy: EgressPolicy, base: AbstractResolver | None = None) -> None:
        """Check with ``policy`` what ``base`` (default aiohttp's resolver) resolves.

        Construct it inside the running event loop (aiohttp's resolver binds to it).
        """
        self._policy = policy
        self._owns_base = base is None
        self._base: AbstractResolver = DefaultResolver() if base is None else base

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The allowed addresses of ``host``.

        Raises:
            EgressRefusedError: ``host`` is a metadata name.
            AddressesRefusedError: Every address ``host`` resolves to is refused.
            OSError: The lookup itself failed (aiohttp reports it as a DNS error).
        """
        self._policy.check_hostname(host)
        found = await self._base.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refusals: list[str] = []
        for result in found:
            reason = self._policy.refusal(host, result["host"])
            if reason is None:
                allowed.append(result)
            else:
                refusals.append(reason)
        if refusals and not allowed:
            raise AddressesRefusedError(refusals[0])
        if refusals:
            # Mixed answers: connect to the public ones only, and say so.
            log.warning(
                "webhook host %s also resolves to refused addresses; using %s only: %s",
                host,
                ", ".join(result["host"] for result in allowed),
                "; ".join(refusals),
                extra={"endpoint_host": host},
            )
        return allowed

    async def close(self) -> None:
        """Close the base resolver if this one created it."""
        if self._owns_base:
            await self._base.close()
