"""voxserve.net: which addresses count as public, URLs refused before anything connects, and what
of a URL or an upstream answer may be shown."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from voxserve.errors import InvalidRequestError
from voxserve.net import fetch_url, is_public, redact_url, scrub, upstream_reason


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("2002:808:808::", True),  # 6to4 of a public address
        ("127.0.0.1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", False),  # 6to4 of 169.254.169.254, the cloud's metadata
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b:1::a00:1", False),  # local-use NAT64 of 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
        ("::7f00:1", False),  # IPv4-compatible (deprecated)
        ("fe80::1", False),
        ("fc00::1", False),
    ],
)
def test_an_address_is_public_only_with_every_address_it_carries(address: str, public: bool):
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every name resolution attempted, refused: a URL refused by its shape resolves nothing."""
    attempts: list = []

    def resolve(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("nothing may be resolved for this URL")

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return attempts


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # Parsers disagree on this one's host: 127.0.0.1 to some, 8.8.8.8 to httpx.
        ("http://127.0.0.1:18790\\@8.8.8.8/", "url must not hold a backslash"),
        ("http://127.0.0.1:18790/\\\\8.8.8.8/", "url must not hold a backslash"),
        ("http://user:secret@8.8.8.8/clip.wav", "url must not hold a user name or password"),
        ("http://8.8.8.8@127.0.0.1/clip.wav", "url must not hold a user name or password"),
    ],
)
async def test_a_url_that_parsers_read_differently_is_refused(no_connections, url, message):
    with pytest.raises(InvalidRequestError) as refused:
        await fetch_url(url, max_bytes=1000, time_limit=5)
    assert refused.value.message.startswith(message)
    assert (refused.value.code, refused.value.param) == ("invalid_url", "url")
    assert "secret" not in refused.value.message
    assert no_connections == []


@pytest.mark.parametrize("host", ["a" * 300, "a" * 64 + ".example.com", "a..example.com"])
async def test_a_host_name_too_long_or_empty_is_an_invalid_url(host: str):
    # Python's resolver raised UnicodeError ("label too long") for these: an internal error.
    with pytest.raises(InvalidRequestError) as refused:
        await fetch_url(f"http://{host}/clip.wav", max_bytes=1000, time_limit=5)
    assert refused.value.code == "invalid_url"
    assert "is not a valid host name" in refused.value.message


def test_url_credentials_are_redacted_wherever_they_are():
    text = "the LLM at http://ava:hunter2@127.0.0.1:8080/v1 (and https://k:p@ss@h.example/x?a=b)"
    assert redact_url(text) == (
        "the LLM at http://***@127.0.0.1:8080/v1 (and https://***@h.example/x?a=b)"
    )
    assert redact_url("http://127.0.0.1/a@b") == "http://127.0.0.1/a@b"  # an @ in the path


def test_an_upstream_error_is_told_by_its_status_and_code_only():
    key = "sk-proj-0123456789abcdef"
    echoed = {"error": {"message": f"bad key Bearer {key}", "type": "auth", "code": key}}
    response = httpx.Response(401, json=echoed)
    assert upstream_reason(response) == "HTTP 401 Unauthorized (auth)"  # the code is the key
    plain = httpx.Response(503, text=f"Authorization: Bearer {key}")
    assert upstream_reason(plain) == "HTTP 503 Service Unavailable"
    coded = httpx.Response(404, json={"error": {"code": "model_not_found", "message": "..."}})
    assert upstream_reason(coded) == "HTTP 404 Not Found (model_not_found)"


def test_scrub_keeps_a_message_but_no_key_or_credentials():
    message = (
        "unknown voice 'nobody' for engine 'piper'; sent Bearer rp_abc and key "
        "rp-engine-secret-2222222 to http://u:pw@10.0.0.1/"
    )
    assert scrub(message) == (
        "unknown voice 'nobody' for engine 'piper'; sent Bearer *** and key *** to "
        "http://***@10.0.0.1/"
    )
    assert len(scrub("x" * 1000)) == 300
