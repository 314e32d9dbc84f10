"""Every route that takes a body refuses it (413) as soon as it outgrows its limit, whether it
declares its length or comes chunked: JSON bodies, and multipart forms with one audio file."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.requests import Request

from tests.conftest import running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.errors import PayloadTooLargeError
from voxserve.server.app import create_app
from voxserve.server.uploads import FORM_FIELDS_BYTES, MAX_AUDIO_BYTES, read_audio_form

MULTIPART = "multipart/form-data; boundary=b"
FORM_LIMIT = MAX_AUDIO_BYTES + FORM_FIELDS_BYTES


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("body-limits")
    synthesizer = make_synthesizer(FakeEngine(cloning=True), data_dir=data_dir)
    with running(create_app(synthesizer=synthesizer)) as served:
        assert httpx.post(f"{served}/v1/audio/voices", json={"name": "kept"}).status_code == 201
        yield served


def json_padding(size: int) -> Iterator[bytes]:
    """A JSON object of about ``size`` bytes, in 64 KiB pieces: sent chunked, it declares no
    length."""
    yield b'{"padding": "'
    yield from itertools.repeat(b"x" * 2**16, size // 2**16)
    yield b'"}'


def file_part(field: str, size: int) -> Iterator[bytes]:
    """A multipart form whose one part is a file of ``size`` bytes, in 1 MiB pieces."""
    yield (f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="a.wav"\r\n'
           "Content-Type: audio/wav\r\n\r\n").encode()  # fmt: skip
    yield from itertools.repeat(b"\0" * 2**20, size // 2**20)
    yield b"\r\n--b--\r\n"


def declared_status(url: str, method: str, route: str, content_type: str, length: int) -> int:
    """The status of a request that declares a ``length`` body and sends none of it: one refused
    on its headers alone is answered at once."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(
            f"{method} {route} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: "
            f"{content_type}\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        return int(connection.recv(4096).split(b" ", 2)[1])


JSON_ROUTES = [
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/audio/dialogue"),
    ("POST", "/v1/audio/voices"),
    ("PATCH", "/v1/audio/voices/kept"),
    ("POST", "/v1/audio/voices/restore"),
]


@pytest.mark.parametrize(("method", "route"), JSON_ROUTES)
def test_a_json_body_over_its_limit_is_refused(url, method, route):
    # 4 MiB: over every JSON route's limit (a dialogue's, the largest, is about 460 KiB).
    chunked = httpx.request(method, url + route, content=json_padding(4 * 2**20), timeout=60)
    assert chunked.status_code == 413, chunked.text
    assert chunked.json()["error"]["code"] == "body_too_large"
    assert declared_status(url, method, route, "application/json", 4 * 2**20) == 413


def test_the_longest_profile_is_under_its_limit(url):
    # Written as \u escapes, an emoji takes 12 bytes of JSON: a profile's longest fields so.
    emoji = "\\ud83d\\ude00"
    body = (f'{{"name": "escaped", "description": "{emoji * 2000}", '
            f'"transcript": "{emoji * 5000}"}}')  # fmt: skip
    created = httpx.post(f"{url}/v1/audio/voices", content=body, timeout=60)
    assert created.status_code == 201, created.text
    assert created.json()["description"] == "\U0001f600" * 2000


@pytest.mark.parametrize(
    ("route", "field"),
    [
        ("/v1/audio/speech", "voice"),
        ("/v1/audio/voices", "audio_sample"),
        ("/v1/audio/voices/import", "package"),
    ],
)
def test_a_multipart_upload_over_its_limit_is_refused(url, route, field):
    chunked = httpx.post(
        url + route, content=file_part(field, FORM_LIMIT + 2**20),
        headers={"content-type": MULTIPART}, timeout=120,
    )  # fmt: skip
    assert chunked.status_code == 413, chunked.text
    assert (chunked.json()["error"]["code"], chunked.json()["error"]["param"]) == (
        "upload_too_large", field,
    )  # fmt: skip
    assert declared_status(url, "POST", route, MULTIPART, FORM_LIMIT + 1) == 413


async def test_a_chunked_upload_is_refused_before_more_of_it_is_spooled():
    """The form parser spools a file part to disk as it comes; the body is counted on the way
    in, so that no more than the limit is ever taken from the client."""
    pieces = file_part("audio_sample", FORM_LIMIT + 64 * 2**20)
    taken = 0

    async def receive() -> dict:
        nonlocal taken
        piece = next(pieces, None)
        taken += len(piece or b"")
        return {"type": "http.request", "body": piece or b"", "more_body": piece is not None}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [
        (b"content-type", MULTIPART.encode()),
    ]}  # fmt: skip
    with pytest.raises(PayloadTooLargeError):
        await read_audio_form(Request(scope, receive), "audio_sample")
    assert taken <= FORM_LIMIT + 2**20


def test_a_text_field_over_its_limit_is_refused(url: str):
    form = {"input": "x" * (FORM_FIELDS_BYTES + 1)}
    response = httpx.post(
        f"{url}/v1/audio/speech", data=form, files={"voice": ("a.wav", b"", "audio/wav")}
    )
    assert response.status_code == 400
    assert "maximum size" in response.json()["error"]["message"]
