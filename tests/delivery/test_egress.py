"""Egress rules: which addresses and URLs a webhook may reach, and one resolution per connect."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver

from delivery.http_doubles import Endpoint, ScriptedResolver, app_record, serve_endpoint
from portability.delivery import Outcome, WebhookSender
from portability.settings import Settings
from portability.webhooks.egress import (
    AddressKind,
    CheckedResolver,
    EgressPolicy,
    EgressRefusedError,
    address_kind,
)

BODY = b'{"type":"test.event","data":{}}'
MSG_ID = "msg_0123456789abcdef0123456789abcdef"


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async with serve_endpoint() as served:
        yield served


async def post_once(
    settings: Settings, url: str, resolver: AbstractResolver | None = None
) -> Outcome:
    sender = WebhookSender(settings, resolver=resolver)
    await sender.start()
    try:
        return await sender.post_event(app_record(url), MSG_ID, BODY)
    finally:
        await sender.stop()


# --- address classification ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("93.184.216.34", None),
        ("8.8.8.8", None),
        ("172.32.0.1", None),  # just past 172.16.0.0/12
        ("100.128.0.1", None),  # just past 100.64.0.0/10
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # RFC 6598 (CGNAT)
        ("fd12:3456::1", "private"),  # IPv6 ULA
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("169.254.169.254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "reserved"),
        ("2001:db8::1", "reserved"),
        # IPv6 forms that reach an IPv4 address are judged by that address.
        ("::ffff:10.0.0.5", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:93.184.216.34", None),
        ("64:ff9b::a00:5", "private"),  # NAT64 of 10.0.0.5
        ("64:ff9b::5db8:d822", None),  # NAT64 of 93.184.216.34
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 of 169.254.169.254
    ],
)
def test_address_kinds(address: str, kind: AddressKind | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_loopback_needs_its_flag_and_private_its_own() -> None:
    strict = EgressPolicy(allow_loopback=False)
    assert "a loopback address; refused" in (strict.refusal("localhost", "127.0.0.1") or "")
    assert EgressPolicy(allow_loopback=True).refusal("localhost", "127.0.0.1") is None
    # The loopback flag does not open private ranges, nor the private flag loopback.
    assert EgressPolicy(allow_loopback=True).refusal("h", "10.0.0.5") is not None
    assert EgressPolicy(allow_loopback=False, allow_private=True).refusal("h", "::1") is not None
    assert EgressPolicy(allow_private=True).refusal("h", "10.0.0.5") is None
    assert EgressPolicy(allow_private=True).refusal("h", "fd12::1") is None


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "100.100.100.200", "fd00:ec2::254", "169.254.1.1", "0.0.0.0"],  # noqa: S104
)
def test_no_flag_opens_metadata_or_link_local(address: str) -> None:
    everything = EgressPolicy(allow_loopback=True, allow_private=True)
    assert everything.refusal("h", address) is not None


def test_refusal_messages_name_host_address_and_kind() -> None:
    policy = EgressPolicy(allow_loopback=False)
    assert policy.refusal("hooks.example", "10.0.0.5") == (
        "webhook host hooks.example resolves to 10.0.0.5, a private address; refused "
        "(PORTABILITY_WEBHOOK_ALLOW_PRIVATE allows it, for on-premises receivers)"
    )
    assert policy.refusal("169.254.169.254", "169.254.169.254") == (
        "webhook address 169.254.169.254 is a cloud metadata service address; refused"
    )
    mapped = policy.refusal("h.example", "::ffff:10.0.0.5") or ""
    assert "::ffff:a00:5 (IPv4 10.0.0.5), a private address" in mapped


# --- URLs (no DNS) ------------------------------------------------------------------------


def test_https_is_required_outside_development() -> None:
    production = EgressPolicy(require_https=True, allow_loopback=False)
    with pytest.raises(EgressRefusedError, match="must use https"):
        production.check_url("http://hooks.example/h")
    production.check_url("https://hooks.example/h")
    EgressPolicy().check_url("http://hooks.example/h")  # development mode


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.5/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:169.254.169.254]/",
        "https://[fd00:ec2::254]/",
        "https://0.0.0.0:8080/",
        "https://2130706433/",  # 127.0.0.1 as one number
        "https://0x7f.1/",  # 127.0.0.1 in hex shorthand
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://METADATA.GOOGLE.INTERNAL./x",
        "https://metadata/x",
    ],
)
def test_literal_addresses_and_metadata_names_are_refused_without_dns(url: str) -> None:
    with pytest.raises(EgressRefusedError, match="refused"):
        EgressPolicy(allow_loopback=False).check_url(url)


def test_public_literals_and_names_pass_the_url_check() -> None:
    policy = EgressPolicy(require_https=True, allow_loopback=False)
    for url in ("https://93.184.216.34/h", "https://[2606:4700::1111]:8443/h", "https://a.b/"):
        policy.check_url(url)


# --- the resolver ---------------------------------------------------------------------------


async def test_resolver_refuses_a_name_resolving_to_a_private_address() -> None:
    resolver = CheckedResolver(EgressPolicy(), ScriptedResolver([("10.0.0.5", 443)]))
    with pytest.raises(EgressRefusedError) as refused:
        await resolver.resolve("hooks.example", 443, socket.AF_UNSPEC)
    assert str(refused.value).startswith(
        "webhook host hooks.example resolves to 10.0.0.5, a private address; refused"
    )


async def test_resolver_allows_private_with_the_private_flag() -> None:
    resolver = CheckedResolver(
        EgressPolicy(allow_private=True), ScriptedResolver([("10.0.0.5", 443)])
    )
    [result] = await resolver.resolve("hooks.internal", 443)
    assert result["host"] == "10.0.0.5"


async def test_resolver_keeps_only_the_allowed_addresses_of_a_mixed_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = ScriptedResolver([("169.254.169.254", 443), ("93.184.216.34", 443), ("::1", 443)])
    resolver = CheckedResolver(EgressPolicy(allow_loopback=False), base)
    with caplog.at_level(logging.WARNING, "portability.webhooks.egress"):
        results = await resolver.resolve("mixed.example", 443)
    assert [result["host"] for result in results] == ["93.184.216.34"]
    assert "also resolves to refused addresses" in caplog.text
    assert "169.254.169.254" in caplog.text


async def test_resolver_refuses_metadata_names_before_resolving() -> None:
    base = ScriptedResolver([("93.184.216.34", 80)])
    resolver = CheckedResolver(EgressPolicy(), base)
    with pytest.raises(EgressRefusedError, match="cloud metadata service"):
        await resolver.resolve("metadata.google.internal", 80)
    assert base.calls == []


# --- the sender, end to end ---------------------------------------------------------------


async def test_loopback_is_refused_without_the_flag(endpoint: Endpoint, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, webhook_allow_loopback=False)
    # As written (a literal address): it can never pass, so the endpoint waits for a new URL.
    literal = await post_once(settings, endpoint.url())
    assert (literal.ok, literal.status, literal.retriable) == (False, None, False)
    assert literal.endpoint_refused
    # Through DNS: refused now, tried again on the schedule (the answer may change).
    named = await post_once(settings, endpoint.url(host="localhost"))
    assert (named.ok, named.status, named.retriable) == (False, None, True)
    assert not named.endpoint_refused
    for outcome in (literal, named):
        assert "a loopback address; refused" in outcome.reason
    assert "localhost resolves to" in named.reason
    assert endpoint.received == []


async def test_loopback_is_allowed_with_the_flag(endpoint: Endpoint, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, development_mode=False, webhook_allow_loopback=True)
    # Outside development mode https is required: http is refused before any connection.
    refused = await post_once(settings, endpoint.url(host="localhost"))
    assert "must use https" in refused.reason
    assert endpoint.received == []
    development = Settings(data_dir=tmp_path)  # the loopback flag follows development mode
    outcome = await post_once(development, endpoint.url(host="localhost"))
    assert outcome.ok, outcome.reason
    assert endpoint.paths() == ["/answer"]


async def test_a_name_resolving_to_a_private_address_is_refused_and_retried(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    # Even a public-looking name is refused when its address is private.
    base = ScriptedResolver([("10.0.0.5", endpoint.port)])
    outcome = await post_once(
        Settings(data_dir=tmp_path), f"http://hooks.example:{endpoint.port}/answer", base
    )
    # Refused on every attempt while DNS answers so; retried, since the answer can change.
    assert (outcome.ok, outcome.retriable, outcome.endpoint_refused) == (False, True, False)
    assert outcome.reason.startswith(
        "webhook host hooks.example resolves to 10.0.0.5, a private address; refused"
    )
    assert endpoint.received == []


async def test_unspecified_address_never_reaches_the_local_server(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    # On Linux a connection to 0.0.0.0 lands on the local host: unchecked, it would arrive.
    base = ScriptedResolver([("0.0.0.0", endpoint.port)])  # noqa: S104
    outcome = await post_once(
        Settings(data_dir=tmp_path), f"http://sneaky.example:{endpoint.port}/answer", base
    )
    assert "an unspecified address; refused" in outcome.reason
    assert outcome.retriable
    assert endpoint.received == []


async def test_metadata_address_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, webhook_allow_private=True)
    literal = await post_once(settings, "http://169.254.169.254/latest/meta-data/")
    assert literal.reason == (
        "webhook address 169.254.169.254 is a cloud metadata service address; refused"
    )
    assert not literal.retriable
    assert literal.endpoint_refused
    base = ScriptedResolver([("169.254.169.254", 80)])
    named = await post_once(settings, "http://innocent.example/hook", base)
    assert "resolves to 169.254.169.254, a cloud metadata service address" in named.reason
    by_name = await post_once(settings, "http://metadata.google.internal/computeMetadata/v1/")
    assert "is a cloud metadata service; refused" in by_name.reason


async def test_the_checked_address_is_the_one_connected_to(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    """One resolution per connection: the answer checked is the answer connected to.

    The scripted DNS answers the real endpoint first, then (as a rebinding attacker would)
    a second server. Were the connector to look the name up again after the check, the
    request would land on the second server.
    """
    async with serve_endpoint() as second:
        base = ScriptedResolver([("127.0.0.1", endpoint.port)], [("127.0.0.1", second.port)])
        url = f"http://rebind.example:{endpoint.port}/answer"
        outcome = await post_once(Settings(data_dir=tmp_path), url, base)
        assert outcome.ok, outcome.reason
        assert base.calls == ["rebind.example"]
        assert endpoint.paths() == ["/answer"]
        assert second.received == []
    # TLS SNI and the Host header carry the name, not the address.
    assert endpoint.received[0].headers["Host"] == f"rebind.example:{endpoint.port}"


async def test_dns_failure_is_retriable(tmp_path: Path) -> None:
    base = ScriptedResolver(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    outcome = await post_once(Settings(data_dir=tmp_path), "https://gone.example/hook", base)
    assert (outcome.ok, outcome.retriable) == (False, True)
    assert outcome.reason == "DNS lookup of gone.example:443 failed: Name or service not known"


# --- settings -------------------------------------------------------------------------------


def test_loopback_flag_follows_development_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(data_dir=tmp_path).webhook_allow_loopback is True
    assert Settings(data_dir=tmp_path, development_mode=False).webhook_allow_loopback is False
    explicit = Settings(data_dir=tmp_path, development_mode=False, webhook_allow_loopback=True)
    assert explicit.webhook_allow_loopback is True
    monkeypatch.setenv("PORTABILITY_DEVELOPMENT_MODE", "false")
    from_env = Settings(data_dir=tmp_path)
    assert (from_env.development_mode, from_env.webhook_allow_loopback) == (False, False)
    assert EgressPolicy.from_settings(from_env) == EgressPolicy(
        require_https=True, allow_loopback=False, allow_private=False
    )


def test_retry_after_bounds_must_be_ordered(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="delivery_retry_after_min_s"):
        Settings(data_dir=tmp_path, delivery_retry_after_min_s=10, delivery_retry_after_max_s=5)
