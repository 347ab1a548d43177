"""FHIR-server fallback (unit level, respx): failure modes, paging, concurrency, budget, token."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from cds_hooks.fhir_client import FHIR_JSON, NO_USABLE_ANSWER, FetchFailed, FhirFetcher, server_from_request
from service.app import create_app
from tests.builders import bundle, obs, order_sign, patient, patient_view
from tests.cds_hooks.test_keysets import RawServer
from tests.conftest import make_settings

BASE = "https://ehr.example.org/fhir"
TOKEN = "s3cr3t-access-token"
SIGN = "/cds-services/anastrozole-bone-order-sign"
VIEW = "/cds-services/anastrozole-bone-patient-view"


def with_fhir_server(req: dict[str, Any], drop: tuple[str, ...]) -> dict[str, Any]:
    for key in drop:
        req["prefetch"].pop(key)
    req["fhirServer"] = BASE
    req["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "osteoguard",
    }
    return req


@pytest.fixture
def fast_client(tmp_path: Any) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path, fhir_timeout_s=0.5))) as c:
        yield c


def codes(body: dict[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in body["cards"]]


# ---- the happy paths ----------------------------------------------------------------------
@respx.mock
def test_missing_keys_are_fetched_with_the_token_and_give_the_same_cards(client: TestClient) -> None:
    full = order_sign("fc-1", e2=6.0)
    expected = codes(client.post(SIGN, json=full).json())
    partial = with_fhir_server(order_sign("fc-1", e2=6.0), ("estradiol", "vitaminD"))
    e2_route = respx.get(url__regex=rf"{re.escape(BASE)}/Observation\?.*%7C2243-4").mock(
        return_value=httpx.Response(200, json=full["prefetch"]["estradiol"])
    )
    vd_route = respx.get(url__regex=rf"{re.escape(BASE)}/Observation\?.*%7C62292-8").mock(
        return_value=httpx.Response(200, json=full["prefetch"]["vitaminD"])
    )
    assert codes(client.post(SIGN, json=partial).json()) == expected
    for route in (e2_route, vd_route):
        request = route.calls.last.request
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["accept"] == "application/fhir+json"
    assert len(respx.calls) == 2  # keys the request already had are never queried


@respx.mock
def test_fallback_queries_are_the_discovery_templates_url_encoded(client: TestClient) -> None:
    template = client.get("/cds-services").json()["services"][0]["prefetch"]["estradiol"]
    route = respx.get(url__startswith=f"{BASE}/Observation").mock(
        return_value=httpx.Response(200, json=bundle())
    )
    client.post(SIGN, json=with_fhir_server(order_sign("fc-2"), ("estradiol",)))
    sent = route.calls.last.request.url
    assert str(sent) == f"{BASE}/" + template.replace("{{context.patientId}}", "fc-2")
    assert "%7C" in sent.query.decode() and "%3A%2F%2F" in sent.query.decode()  # | and :// encoded
    assert "," in sent.query.decode()  # the OR separator stays a comma


@respx.mock
def test_no_prefetch_at_all_fetches_every_key(client: TestClient) -> None:
    full = order_sign("fc-3", e2=6.0)
    expected = codes(client.post(SIGN, json=full).json())
    respx.get(f"{BASE}/Patient/fc-3").mock(return_value=httpx.Response(200, json=full["prefetch"]["patient"]))
    respx.get(url__startswith=f"{BASE}/MedicationRequest").mock(
        return_value=httpx.Response(200, json=full["prefetch"]["medications"])
    )
    respx.get(url__startswith=f"{BASE}/MedicationStatement").mock(
        return_value=httpx.Response(200, json=bundle())
    )
    for key, code in (
        ("estradiol", "2243-4"),
        ("boneDensity", "38267-1"),
        ("vitaminD", "62292-8"),
        ("safetyLabs", "17861-6"),
        ("testosterone", "2986-8"),
    ):
        respx.get(url__regex=rf"{re.escape(BASE)}/Observation\?.*%7C{code}").mock(
            return_value=httpx.Response(200, json=full["prefetch"][key])
        )
    respx.get(url__startswith=f"{BASE}/Procedure").mock(return_value=httpx.Response(200, json=bundle()))
    req = with_fhir_server(order_sign("fc-3", e2=6.0), tuple(full["prefetch"]))
    assert codes(client.post(SIGN, json=req).json()) == expected
    assert len(respx.calls) == len(full["prefetch"]) == 10


@respx.mock
def test_next_links_are_followed_and_merged(client: TestClient) -> None:
    page1 = bundle(obs("old", "fc-4", "2243-4", 30, "pg/mL", 300))
    page1["link"] = [{"relation": "next", "url": f"{BASE}/Observation?page=2"}]
    page2 = bundle(obs("new", "fc-4", "2243-4", 6, "pg/mL", 20))
    respx.get(f"{BASE}/Observation?page=2").mock(return_value=httpx.Response(200, json=page2))
    respx.get(url__startswith=f"{BASE}/Observation").mock(return_value=httpx.Response(200, json=page1))
    body = client.post(SIGN, json=with_fhir_server(order_sign("fc-4"), ("estradiol",))).json()
    assert "low-estradiol" in codes(body)  # the low value was on page 2


@respx.mock
def test_patient_view_fetches_only_medications_when_not_on_anastrozole(client: TestClient) -> None:
    req = with_fhir_server(patient_view("fc-5"), ("medications", "estradiol"))
    respx.get(url__startswith=f"{BASE}/MedicationRequest").mock(
        return_value=httpx.Response(200, json=bundle())
    )
    assert client.post(VIEW, json=req).json() == {"cards": []}
    assert len(respx.calls) == 1


# ---- failures: 412 naming the key and the reason, never the token ----------------------------
@pytest.mark.parametrize(
    ("response", "logged"),
    [
        (httpx.Response(401), "HTTP 401"),
        (httpx.Response(403), "HTTP 403"),
        (httpx.Response(404), "HTTP 404"),
        (httpx.Response(500, text="Traceback: boom"), "HTTP 500"),
        (httpx.Response(503), "HTTP 503"),
        (httpx.Response(200, text="<html>login</html>"), "not JSON"),
        (httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []}), "an OperationOutcome"),
        (httpx.Response(200, json=[1, 2]), "not a FHIR resource"),
        (httpx.Response(302, headers={"location": "https://evil.example/steal"}), "HTTP 302"),
    ],
)
@respx.mock
def test_failed_fetch_is_412_naming_the_key_with_one_text_and_the_detail_in_the_log(
    client: TestClient, response: httpx.Response, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    respx.get(url__startswith=f"{BASE}/Observation").mock(return_value=response)
    result = client.post(SIGN, json=with_fhir_server(order_sign("fc-6"), ("vitaminD",)))
    assert result.status_code == 412
    issue = result.json()["issue"][0]
    assert issue["expression"] == ["prefetch.vitaminD"]
    assert "the FHIR server gave no usable answer" in issue["details"]["text"]
    assert TOKEN not in result.text and "Traceback" not in result.text and "evil" not in result.text
    assert any(getattr(r, "problem", None) == logged for r in caplog.records)


@respx.mock
def test_a_search_answered_with_another_resource_is_412(client: TestClient) -> None:
    respx.get(url__startswith=f"{BASE}/Observation").mock(
        return_value=httpx.Response(200, json={"resourceType": "Patient", "id": "x"})
    )
    result = client.post(SIGN, json=with_fhir_server(order_sign("fc-6"), ("vitaminD",)))
    assert result.status_code == 412 and "not a Bundle" in result.json()["issue"][0]["details"]["text"]


def test_a_closed_port_and_a_live_non_fhir_port_give_the_same_412_text(tmp_path: Any) -> None:
    # A real closed port and a real live web server on 127.0.0.1: the text must not tell them apart.
    class Web(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b"<html>admin console</html>"
            self.send_response(404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    live = ThreadingHTTPServer(("127.0.0.1", 0), Web)
    threading.Thread(target=live.serve_forever, daemon=True).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound, never listening: connections are refused
        live_base = f"http://127.0.0.1:{live.server_address[1]}/fhir"
        closed_base = f"http://127.0.0.1:{closed_port}/fhir"
        settings = make_settings(tmp_path, fhir_private_servers=f"{live_base},{closed_base}")
        texts = []
        try:
            with TestClient(create_app(settings)) as c:
                for base in (live_base, closed_base):
                    req = order_sign("fc-scan")
                    del req["prefetch"]["vitaminD"]
                    req["fhirServer"] = base
                    result = c.post(SIGN, json=req)
                    assert result.status_code == 412
                    texts.append(result.json()["issue"][0]["details"]["text"])
        finally:
            live.shutdown()
            live.server_close()
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    "server",
    [
        "https://169.254.169.254/latest",  # cloud metadata
        "https://[fe80::1]/fhir",
        "https://10.1.2.3/fhir",
        "https://192.168.0.10/fhir",
        "https://172.16.5.5/fhir",
        "https://[fd00::5]/fhir",
        "https://[::ffff:10.0.0.1]/fhir",
        "https://0.0.0.0/fhir",
        "https://127.0.0.1/fhir",
        "http://localhost:8080/fhir",
    ],
)
@respx.mock
def test_fallback_never_calls_an_internal_address_it_was_not_told_of(client: TestClient, server: str) -> None:
    route = respx.route().mock(return_value=httpx.Response(200, json=bundle()))
    req = order_sign("fc-internal")
    del req["prefetch"]["vitaminD"]
    req["fhirServer"] = server
    result = client.post(SIGN, json=req)
    assert result.status_code == 412 and "internal address" in result.json()["issue"][0]["details"]["text"]
    assert not route.called


def test_a_listed_private_server_is_called_but_link_local_never() -> None:
    listed = frozenset({"https://10.1.2.3/fhir", "https://169.254.169.254/fhir"})
    assert server_from_request("https://10.1.2.3/fhir/", None, listed).base == "https://10.1.2.3/fhir"
    with pytest.raises(FetchFailed, match="internal address"):
        server_from_request("https://169.254.169.254/fhir", None, listed)
    with pytest.raises(FetchFailed, match="internal address"):
        server_from_request("https://10.1.2.4/fhir", None, listed)


def test_a_public_address_needs_no_listing() -> None:
    assert server_from_request("https://8.8.8.8/fhir", None).base == "https://8.8.8.8/fhir"


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("bad")]
)
@respx.mock
def test_unreachable_server_is_412(client: TestClient, error: Exception) -> None:
    respx.get(url__startswith=BASE).mock(side_effect=error)
    result = client.post(SIGN, json=with_fhir_server(order_sign("fc-7"), ("estradiol", "boneDensity")))
    assert result.status_code == 412
    assert result.json()["issue"][0]["expression"] == ["prefetch.boneDensity", "prefetch.estradiol"]


@respx.mock
def test_too_many_pages_is_412_not_a_partial_answer(client: TestClient) -> None:
    looping = bundle()
    looping["link"] = [{"relation": "next", "url": f"{BASE}/Observation?page=again"}]
    respx.get(url__startswith=f"{BASE}/Observation").mock(return_value=httpx.Response(200, json=looping))
    result = client.post(SIGN, json=with_fhir_server(order_sign("fc-8"), ("estradiol",)))
    assert result.status_code == 412 and "pages" in result.json()["issue"][0]["details"]["text"]
    assert len(respx.calls) == 10


@respx.mock
def test_next_link_to_another_host_is_not_followed_with_the_token(client: TestClient) -> None:
    page = bundle()
    page["link"] = [{"relation": "next", "url": "https://elsewhere.example/fhir/Observation?page=2"}]
    respx.get(url__startswith=f"{BASE}/Observation").mock(return_value=httpx.Response(200, json=page))
    elsewhere = respx.get(url__startswith="https://elsewhere.example").mock(return_value=httpx.Response(200))
    result = client.post(SIGN, json=with_fhir_server(order_sign("fc-9"), ("estradiol",)))
    assert result.status_code == 412 and not elsewhere.called


@pytest.mark.parametrize(
    ("server", "auth", "reason"),
    [
        (None, None, "no fhirServer"),
        ("ftp://ehr.example.org/fhir", None, "absolute http(s) URL"),
        ("fhir/relative", None, "absolute http(s) URL"),
        ("http://ehr.example.org/fhir", {"access_token": TOKEN}, "must use https"),
        (BASE, {"token_type": "Bearer"}, "no access_token"),
        (BASE, "a-string", "no access_token"),
    ],
)
def test_unusable_fhir_server_or_authorization_is_412(
    client: TestClient, server: Any, auth: Any, reason: str
) -> None:
    req = order_sign("fc-10")
    del req["prefetch"]["estradiol"]
    req["fhirServer"], req["fhirAuthorization"] = server, auth
    result = client.post(SIGN, json=req)
    assert result.status_code == 412 and reason in result.json()["issue"][0]["details"]["text"]


def test_plain_http_is_allowed_only_for_loopback() -> None:
    listed = frozenset({"http://127.0.0.1:8090/fhir", "http://localhost/fhir"})
    assert (
        server_from_request("http://127.0.0.1:8090/fhir", None, listed).base == "http://127.0.0.1:8090/fhir"
    )
    assert server_from_request("http://localhost/fhir", None, listed).headers == {
        "Accept": "application/fhir+json"
    }
    with pytest.raises(FetchFailed):
        server_from_request("http://10.0.0.5/fhir", None)


# ---- concurrency and the time budget --------------------------------------------------------
def test_missing_keys_are_fetched_concurrently() -> None:
    async def scenario() -> int:
        started = 0
        all_started = asyncio.Event()

        async def handler(request: httpx.Request) -> httpx.Response:
            nonlocal started
            started += 1
            if started == 3:
                all_started.set()
            # Each answer waits until all three requests are in flight: sequential fetching
            # would never get past the first one and the budget would expire.
            await asyncio.wait_for(all_started.wait(), timeout=5)
            return httpx.Response(200, json=bundle())

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            fetcher = FhirFetcher(http, budget_s=10)
            server = server_from_request(BASE, {"access_token": TOKEN})
            queries = {k: f"Observation?code={k}" for k in ("a", "b", "c")}
            results, failures = await fetcher.fetch(server, queries, fetcher.deadline())
        assert failures == []
        return len(results)

    assert asyncio.run(scenario()) == 3


def test_a_slow_server_cannot_hold_the_request_past_the_budget() -> None:
    async def scenario() -> tuple[float, list[FetchFailed]]:
        never = asyncio.Event()

        async def handler(request: httpx.Request) -> httpx.Response:
            await never.wait()  # a server that never answers
            return httpx.Response(200, json=bundle())

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            fetcher = FhirFetcher(http, budget_s=0.3)
            server = server_from_request(BASE, None)
            loop = asyncio.get_running_loop()
            start = loop.time()
            _, failures = await fetcher.fetch(server, {"estradiol": "Observation?x=1"}, fetcher.deadline())
            return loop.time() - start, failures

    elapsed, failures = asyncio.run(scenario())
    assert elapsed < 1.0
    assert [f.key for f in failures] == ["estradiol"] and "0.3 s" in failures[0].reason


def test_cancelling_a_fetch_cancels_its_queries() -> None:
    """A call cancelled because its client has gone stops its FHIR queries, not only the wait."""

    async def scenario() -> int:
        arrived, never = asyncio.Event(), asyncio.Event()
        started = cancelled = 0

        async def handler(request: httpx.Request) -> httpx.Response:
            nonlocal started, cancelled
            started += 1
            if started == 2:
                arrived.set()
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled += 1
                raise
            return httpx.Response(200, json=bundle())

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            fetcher = FhirFetcher(http, budget_s=30)
            queries = {"a": "Observation?code=a", "b": "Observation?code=b"}
            call = asyncio.ensure_future(
                fetcher.fetch(server_from_request(BASE, None), queries, fetcher.deadline())
            )
            await asyncio.wait_for(arrived.wait(), timeout=5)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        return cancelled

    assert asyncio.run(scenario()) == 2


def test_spent_budget_fails_without_querying() -> None:
    async def scenario() -> list[FetchFailed]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as http:
            fetcher = FhirFetcher(http, budget_s=1)
            _, failures = await fetcher.fetch(server_from_request(BASE, None), {"k": "Observation?x"}, 0.0)
            return failures

    assert "budget" in asyncio.run(scenario())[0].reason


@respx.mock
def test_patient_read_must_return_a_patient(client: TestClient) -> None:
    respx.get(f"{BASE}/Patient/fc-11").mock(return_value=httpx.Response(200, json=bundle(patient("fc-11"))))
    result = client.post(SIGN, json=with_fhir_server(order_sign("fc-11"), ("patient",)))
    assert result.status_code == 412 and "not a Patient" in result.json()["issue"][0]["details"]["text"]


# ---- the byte cap (OSTEOGUARD_FHIR_MAX_BYTES) -----------------------------------------------
def endless_bundle_server() -> RawServer:
    """A FHIR server on 127.0.0.1 that answers a 200 without content-length and then streams a
    Bundle of up to 100 MB until the connection closes."""
    piece = b'{"resource": {"resourceType": "Observation", "id": "x"}},' * 1000

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\nconnection: close\r\n\r\n")
        conn.sendall(b'{"resourceType": "Bundle", "type": "searchset", "entry": [')
        while server.sent < 100_000_000 and not stop.is_set():
            conn.sendall(piece)
            server.sent += len(piece)

    server = RawServer(serve)
    return server


def capped_fetch(
    http: httpx.AsyncClient, base: str, queries: dict[str, str], max_bytes: int
) -> tuple[dict[str, Any], list[FetchFailed], list[str]]:
    too_large: list[str] = []
    fetcher = FhirFetcher(
        http,
        budget_s=5,
        max_bytes=max_bytes,
        listed=frozenset({base}),
        on_too_large=lambda: too_large.append("x"),
    )

    async def scenario() -> tuple[dict[str, Any], list[FetchFailed]]:
        async with http:
            return await fetcher.fetch(
                server_from_request(base, None, frozenset({base})), queries, fetcher.deadline()
            )

    results, failures = asyncio.run(scenario())
    return results, failures, too_large


def test_an_endless_fhir_body_without_a_length_is_cut_at_the_byte_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = endless_bundle_server()
    base = server.url.rsplit("/", 1)[0]
    started = time.monotonic()
    try:
        _, failures, too_large = capped_fetch(
            httpx.AsyncClient(trust_env=False), base, {"estradiol": "Observation?code=x"}, 256 * 1024
        )
    finally:
        server.close()
    assert time.monotonic() - started < 2
    assert [(f.key, f.reason) for f in failures] == [("estradiol", NO_USABLE_ANSWER)]
    assert server.sent < 20_000_000  # we hung up: the 100 MB were never all sent
    assert too_large == ["x"]  # counted once for the call (osteoguard_limits_total{limit="fhir_bytes"})
    assert any("too large" in str(getattr(r, "problem", "")) for r in caplog.records)


@respx.mock
def test_a_declared_content_length_over_the_cap_is_refused_before_reading(client: TestClient) -> None:
    huge = httpx.Response(
        200, headers={"content-length": str(100 * 1024 * 1024), "content-type": FHIR_JSON}, stream=NeverRead()
    )
    respx.get(url__startswith=f"{BASE}/Observation").mock(return_value=huge)
    result = client.post(SIGN, json=with_fhir_server(order_sign("fc-cap"), ("vitaminD",)))
    assert result.status_code == 412
    issue = result.json()["issue"][0]
    assert issue["expression"] == ["prefetch.vitaminD"]
    assert NO_USABLE_ANSWER in issue["details"]["text"]


@respx.mock
def test_the_byte_cap_counts_every_page_of_a_call_together() -> None:
    # Each page is well under the cap; the three pages together are not.
    filler = [
        {"resource": {"resourceType": "Observation", "id": f"o{i}", "note": "x" * 1000}} for i in range(40)
    ]
    pages = []
    for n in (1, 2, 3):
        page: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": filler}
        if n < 3:
            page["link"] = [{"relation": "next", "url": f"{BASE}/Observation?page={n + 1}"}]
        pages.append(page)
    respx.get(f"{BASE}/Observation?page=2").mock(return_value=httpx.Response(200, json=pages[1]))
    respx.get(f"{BASE}/Observation?page=3").mock(return_value=httpx.Response(200, json=pages[2]))
    respx.get(f"{BASE}/Observation?code=x").mock(return_value=httpx.Response(200, json=pages[0]))
    size = len(httpx.Response(200, json=pages[0]).content)
    assert 2 * size < 100 * 1024 < 3 * size
    results, failures, too_large = capped_fetch(
        httpx.AsyncClient(), BASE, {"k": "Observation?code=x"}, 100 * 1024
    )
    assert results == {} and [f.reason for f in failures] == [NO_USABLE_ANSWER] and too_large == ["x"]
    _, failures, _ = capped_fetch(httpx.AsyncClient(), BASE, {"k": "Observation?code=x"}, 4 * size)
    assert failures == []  # the same pages within a larger cap are read whole


class NeverRead(httpx.AsyncByteStream):
    """A body that fails the test if anyone reads it."""

    async def __aiter__(self) -> Any:
        raise AssertionError("the body was read although its declared length is over the cap")
        yield b""  # pragma: no cover
