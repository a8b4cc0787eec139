"""Where the crawler may go: http(s) only, to the hosts a source configures, never to a private,
loopback, link-local or reserved address unless the source itself is configured on that address.

`SafeTargetsMiddleware` (scrapers/middlewares.py) applies `Targets` to every request, redirects
included, after resolving its host; the spiders check each link before they follow it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from scrapers.sources import url_host

SCHEMES = ("http", "https")


def ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `text` spells (an IPv4-mapped IPv6 address as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_public(text: str) -> bool:
    """True for a globally routable unicast address (not private, loopback, link-local,
    unspecified, reserved, shared or multicast)."""
    address = ip_address(text)
    return address is not None and address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Targets:
    """The hosts one account's requests may reach."""

    hosts: frozenset[str]

    @property
    def local(self) -> frozenset[str]:
        """Configured hosts written as non-public addresses (a local test server): exempt from
        the address check. A host *name* never is, whatever it resolves to."""
        return frozenset(h for h in self.hosts if ip_address(h) and not is_public(h))

    def refusal(self, url: str) -> str | None:
        """Why `url` must not be requested (scheme or host), or None when it may be."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in SCHEMES:
            kind = f"{scheme}: URLs" if scheme else "URLs without a scheme"
            return f"only http(s) URLs are fetched, not {kind}"
        host = url_host(url)
        if host not in self.hosts:
            allowed = ", ".join(sorted(self.hosts))
            return f"{host or 'no host'} is not a host of this source ({allowed})"
        return None

    def address_refusal(self, host: str, address: str) -> str | None:
        """Why `host`, resolved to `address`, must not be requested, or None when it may be."""
        if host in self.local or is_public(address):
            return None
        return (
            f"{host} resolves to {address}, a non-public address (configure a local server "
            "by its IP address to crawl it)"
        )
