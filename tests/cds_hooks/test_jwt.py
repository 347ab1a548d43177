"""CDS Hooks JWT verification with real keys and a real JWK Set server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_hooks.errors import ConfigurationError, TrustedClientsError
from cds_hooks.trust import load_trusted_clients
from service.app import create_app
from tests.builders import order_sign
from tests.conftest import make_settings

EC_KEY = ec.generate_private_key(ec.SECP384R1())
EC_KEY_2 = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=3072)
ISS = "https://ehr.example.org"
BASE = "http://testserver"
DISCOVERY = "/cds-services"
SIGN = "/cds-services/anastrozole-bone-order-sign"


def jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    public = json.loads(algorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, "use": "sig"}


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWK Set that tests can change."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": [jwk(EC_KEY, "ec-1"), jwk(RSA_KEY, "rsa-1")]}
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.hits += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"{self.origin}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class KeyPathsServer:
    """A real key server on 127.0.0.1 that serves a JWK Set per path and records every path asked."""

    def __init__(self, sets: dict[str, dict[str, Any]]) -> None:
        self.sets = sets
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.paths.append(self.path)
                found = outer.sets.get(self.path)
                body = json.dumps(found).encode() if found is not None else b"{}"
                self.send_response(200 if found is not None else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key_paths() -> Iterator[KeyPathsServer]:
    """Honest keys under /keys/, the attacker's key at /evil/ on the same host and port."""
    server = KeyPathsServer(
        {
            "/keys/jwks.json": {"keys": [jwk(EC_KEY, "ec-1")]},
            "/evil/jwks.json": {"keys": [jwk(EC_KEY_2, "attacker")]},
            "/keys-evil/jwks.json": {"keys": [jwk(EC_KEY_2, "attacker")]},
        }
    )
    yield server
    server.stop()


@pytest.fixture
def attacker() -> Iterator[JwksServer]:
    """Another server, on another port, serving only the attacker's key."""
    server = JwksServer()
    server.jwks = {"keys": [jwk(EC_KEY_2, "attacker")]}
    yield server
    server.stop()


def jku_client(tmp_path: Path, jwks_url: str, allow: list[str]) -> TestClient:
    trusted = clients_file(tmp_path, {"jwks_url": jwks_url, "jku_allow": allow})
    return TestClient(
        create_app(make_settings(tmp_path, auth="jwt", trusted_clients=trusted, public_url=BASE))
    )


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


def clients_file(tmp_path: Path, entry: dict[str, Any]) -> Path:
    path = tmp_path / "trusted-clients.yaml"
    path.write_text(yaml.safe_dump({"clients": [{"iss": ISS, **entry}]}))
    return path


@pytest.fixture
def auth_settings(tmp_path: Path, jwks_server: JwksServer) -> dict[str, Any]:
    trusted = clients_file(tmp_path, {"jwks_url": jwks_server.url, "jku_allow": [jwks_server.origin + "/"]})
    return {"auth": "jwt", "trusted_clients": trusted, "public_url": BASE}


@pytest.fixture
def client(tmp_path: Path, auth_settings: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path, **auth_settings))) as c:
        yield c


def token(
    key: Any = EC_KEY,
    alg: str = "ES384",
    kid: str = "ec-1",
    aud: Any = BASE + SIGN,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {
        "iss": ISS,
        "aud": aud,
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "sub": "client",
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **(headers or {})})


def call(client: TestClient, bearer: str | None, path: str = SIGN) -> Any:
    headers = {"authorization": f"Bearer {bearer}"} if bearer is not None else {}
    if path == DISCOVERY:
        return client.get(path, headers=headers)
    return client.post(path, json=order_sign("auth-1"), headers=headers)


def assert_refused(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["issue"][0]["details"]["text"] == "authentication required"


# ---- accepted ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "alg", "kid"),
    [
        (EC_KEY, "ES384", "ec-1"),
        (RSA_KEY, "RS384", "rsa-1"),
        (RSA_KEY, "RS256", "rsa-1"),
        (RSA_KEY, "RS512", "rsa-1"),
    ],
)
def test_valid_token_is_accepted(client: TestClient, key: Any, alg: str, kid: str) -> None:
    assert call(client, token(key, alg, kid)).status_code == 200


def test_discovery_needs_a_token_whose_aud_is_discovery(client: TestClient) -> None:
    assert_refused(call(client, None, DISCOVERY))
    assert call(client, token(aud=BASE + DISCOVERY), DISCOVERY).status_code == 200


def test_aud_may_be_an_array(client: TestClient) -> None:
    assert call(client, token(aud=["https://other.example", BASE + SIGN])).status_code == 200


def test_extra_claims_are_allowed(client: TestClient) -> None:
    assert (
        call(client, token(tenant="t-1", nbf=int(time.time()) - 5, fhirUser="Practitioner/1")).status_code
        == 200
    )


def test_small_clock_skew_is_allowed(client: TestClient) -> None:
    assert call(client, token(iat=int(time.time()) + 30)).status_code == 200


def test_public_url_sets_the_expected_audience(tmp_path: Path, auth_settings: dict[str, Any]) -> None:
    settings = make_settings(tmp_path, **{**auth_settings, "public_url": "https://osteoguard.example.org"})
    with TestClient(create_app(settings)) as c:
        assert_refused(call(c, token(aud=BASE + SIGN)))
        assert call(c, token(aud="https://osteoguard.example.org" + SIGN)).status_code == 200


def test_jwt_mode_without_a_public_url_refuses_to_start(
    tmp_path: Path, auth_settings: dict[str, Any]
) -> None:
    settings = make_settings(tmp_path, **{**auth_settings, "public_url": None})
    with pytest.raises(ConfigurationError, match="OSTEOGUARD_PUBLIC_URL"), TestClient(create_app(settings)):
        pass


def test_a_token_for_another_service_replayed_with_its_host_is_refused(client: TestClient) -> None:
    # The audience is the configured URL, never the Host header the caller chose.
    other = "https://other-cds.example.org"
    response = client.post(
        SIGN,
        json=order_sign("auth-1"),
        headers={"authorization": f"Bearer {token(aud=other + SIGN)}", "host": "other-cds.example.org"},
    )
    assert_refused(response)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_bearer_scheme_is_case_insensitive(client: TestClient, scheme: str) -> None:
    response = client.post(SIGN, json=order_sign("auth-1"), headers={"authorization": f"{scheme} {token()}"})
    assert response.status_code == 200


@pytest.mark.parametrize("crit", [["exp"], ["urn:example:unknown"], [], "b64"])
def test_a_crit_header_is_refused(client: TestClient, crit: Any) -> None:
    # RFC 7515 §4.1.11: extensions listed in crit must be understood; we implement none.
    assert_refused(call(client, token(headers={"crit": crit, "urn:example:unknown": True})))


@pytest.mark.parametrize("alg", [["ES384"], {"alg": "ES384"}, 384, None, True])
def test_an_alg_that_is_not_a_string_is_401_not_500(
    tmp_path: Path, auth_settings: dict[str, Any], alg: Any
) -> None:
    good = token().split(".")
    header = json.loads(base64.urlsafe_b64decode(good[0] + "=="))
    header["alg"] = alg
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with TestClient(create_app(make_settings(tmp_path, **auth_settings)), raise_server_exceptions=False) as c:
        assert_refused(call(c, ".".join([head, good[1], good[2]])))


def test_a_huge_iss_writes_a_bounded_log_line(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    huge = "https://evil.example/" + "x" * 1_000_000
    call(client, token(iss=huge, jti="j" * 100_000))
    (refused,) = [r for r in caplog.records if r.getMessage().startswith("request refused")]
    assert len(str(vars(refused))) < 4_000
    assert refused.iss.startswith("https://evil.example/xxx")  # type: ignore[attr-defined]


def test_health_endpoints_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


# ---- refused: one test per reason -------------------------------------------------------------
def test_missing_token_is_refused(client: TestClient) -> None:
    assert_refused(call(client, None))


def test_not_a_bearer_token_is_refused(client: TestClient) -> None:
    response = client.post(SIGN, json=order_sign("a"), headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert_refused(response)


def test_malformed_token_is_refused(client: TestClient) -> None:
    assert_refused(call(client, "not.a.jwt"))


def test_untrusted_issuer_is_refused(client: TestClient) -> None:
    assert_refused(call(client, token(iss="https://evil.example")))


def test_wrong_audience_is_refused(client: TestClient) -> None:
    assert_refused(call(client, token(aud=BASE + "/cds-services/anastrozole-bone-patient-view")))


def test_expired_token_is_refused(client: TestClient) -> None:
    now = int(time.time())
    assert_refused(call(client, token(iat=now - 600, exp=now - 120)))


def test_token_from_the_future_is_refused(client: TestClient) -> None:
    now = int(time.time())
    assert_refused(call(client, token(iat=now + 300, exp=now + 600)))


def test_nbf_in_the_future_is_refused(client: TestClient) -> None:
    assert_refused(call(client, token(nbf=int(time.time()) + 300)))


def test_missing_exp_is_refused(client: TestClient) -> None:
    assert_refused(call(client, token(exp=None)))


def test_alg_none_is_refused(client: TestClient) -> None:
    unsigned = jwt.encode(
        {"iss": ISS, "aud": BASE + SIGN, "exp": int(time.time()) + 60, "iat": int(time.time()), "jti": "n"},
        None,
        algorithm="none",
        headers={"kid": "ec-1"},
    )
    assert_refused(call(client, unsigned))


def test_hmac_is_refused_even_with_the_public_key_as_secret(client: TestClient) -> None:
    # The classic key-confusion attack, forged by hand (PyJWT will not sign it): HS256 with the
    # verifier's own public key as the HMAC secret.
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    claims = {"iss": ISS, "aud": BASE + SIGN, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    secret = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    assert_refused(call(client, f"{signing_input}.{signature}"))


def test_bad_signature_is_refused(client: TestClient) -> None:
    assert_refused(call(client, token(EC_KEY_2, "ES384", "ec-1")))  # right kid, wrong private key


def test_unknown_kid_is_refused(client: TestClient) -> None:
    assert_refused(call(client, token(EC_KEY_2, "ES384", "ec-unknown")))


def test_missing_jti_is_refused(client: TestClient) -> None:
    assert_refused(call(client, token(jti=None)))


def test_replayed_token_is_refused(client: TestClient) -> None:
    once = token()
    assert call(client, once).status_code == 200
    assert_refused(call(client, once))


def test_replay_is_caught_across_two_app_instances(tmp_path: Path, auth_settings: dict[str, Any]) -> None:
    settings = make_settings(tmp_path, **auth_settings)  # both share one database
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        once = token()
        assert call(one, once).status_code == 200
        assert_refused(call(two, once))


# ---- keys -------------------------------------------------------------------------------------
def test_jku_is_used_only_when_allowed(tmp_path: Path, jwks_server: JwksServer) -> None:
    other = JwksServer()
    other.jwks = {"keys": [jwk(EC_KEY_2, "attacker")]}
    try:
        trusted = clients_file(tmp_path, {"jwks_url": jwks_server.url, "jku_allow": [jwks_server.url]})
        with TestClient(
            create_app(make_settings(tmp_path, auth="jwt", trusted_clients=trusted, public_url=BASE))
        ) as c:
            forged = token(EC_KEY_2, "ES384", "attacker", headers={"jku": other.url})
            assert_refused(call(c, forged))
            assert other.hits == 0  # a jku outside jku_allow is never even fetched
            allowed = token(EC_KEY, "ES384", "ec-1", headers={"jku": jwks_server.url})
            assert call(c, allowed).status_code == 200
    finally:
        other.stop()


@pytest.mark.parametrize(
    "tail",
    [
        "/keys/../evil/jwks.json",  # a dot segment climbing out of the allowed folder
        "/keys/./../evil/jwks.json",
        "/keys/%2e%2e/evil/jwks.json",  # the same, percent-encoded
        "/keys/%2E%2E%2Fevil/jwks.json",
        "/keys/..%2fevil/jwks.json",
        "/keys\\..\\evil/jwks.json",  # backslashes, read as "/" by some parsers
    ],
)
def test_jku_cannot_climb_out_of_the_allowed_path(
    tmp_path: Path, key_paths: KeyPathsServer, tail: str
) -> None:
    with jku_client(tmp_path, key_paths.origin + "/keys/jwks.json", [key_paths.origin + "/keys/"]) as c:
        forged = token(EC_KEY_2, "ES384", "attacker", headers={"jku": key_paths.origin + tail})
        assert_refused(call(c, forged))
    assert not any("evil" in path for path in key_paths.paths)  # no request left for it


def test_jku_prefix_matches_only_at_a_path_segment_boundary(
    tmp_path: Path, key_paths: KeyPathsServer
) -> None:
    # "/keys" allows /keys/... but not /keys-evil/...
    with jku_client(tmp_path, key_paths.origin + "/keys/jwks.json", [key_paths.origin + "/keys"]) as c:
        forged = token(
            EC_KEY_2, "ES384", "attacker", headers={"jku": key_paths.origin + "/keys-evil/jwks.json"}
        )
        assert_refused(call(c, forged))
    assert "/keys-evil/jwks.json" not in key_paths.paths


def test_jku_under_the_prefix_is_fetched_in_its_normalised_form(
    tmp_path: Path, key_paths: KeyPathsServer
) -> None:
    with jku_client(tmp_path, key_paths.origin + "/other.json", [key_paths.origin + "/keys"]) as c:
        honest = token(headers={"jku": key_paths.origin + "/keys/./sub/../jwks.json"})
        assert call(c, honest).status_code == 200
    assert key_paths.paths == ["/keys/jwks.json"]  # what was checked is what was fetched


@pytest.mark.parametrize("entry_tail", ["", "/"])
def test_jku_with_userinfo_never_reaches_the_attacker(
    tmp_path: Path, jwks_server: JwksServer, attacker: JwksServer, entry_tail: str
) -> None:
    # An entry without a trailing slash used to let "allowed-host@attacker/..." through.
    allowed_host = jwks_server.origin.removeprefix("http://")
    attacker_host = attacker.origin.removeprefix("http://")
    with jku_client(tmp_path, jwks_server.url, [jwks_server.origin + entry_tail]) as c:
        for jku in (
            f"http://{allowed_host}@{attacker_host}/jwks.json",
            f"http://{allowed_host}:x@{attacker_host}/jwks.json",
            f"http://user@{allowed_host}/jwks.json",
        ):
            forged = token(EC_KEY_2, "ES384", "attacker", headers={"jku": jku})
            assert_refused(call(c, forged))
    assert attacker.hits == 0


def test_a_refused_jku_falls_back_to_the_clients_own_key_set(tmp_path: Path, jwks_server: JwksServer) -> None:
    # SPEC §1: a jku outside jku_allow is not used; the client's jwks_url verifies the token.
    with jku_client(tmp_path, jwks_server.url, [jwks_server.origin + "/keys/"]) as c:
        honest = token(headers={"jku": jwks_server.origin + "/keys/../jwks.json"})
        assert call(c, honest).status_code == 200


@pytest.mark.parametrize(
    "entry",
    [
        "https://ehr.example.org@attacker.example/keys/",
        "https://user:pw@ehr.example.org/keys/",
        "https://ehr.example.org/keys/?x=1",
        "https://ehr.example.org/keys/#frag",
        "https://ehr.example.org/%2e%2e/keys/",
        "https://ehr.example.org\\@attacker.example/",
        "https://ehr.example.org:99999/",
        "http://ehr.example.org/keys/",  # plain http off loopback
        "https://ehr.example.org/ke ys/",
    ],
)
def test_a_jku_allow_entry_that_could_be_read_two_ways_is_refused_at_load(tmp_path: Path, entry: str) -> None:
    path = clients_file(tmp_path, {"jwks_url": "https://ehr.example.org/jwks.json", "jku_allow": [entry]})
    with pytest.raises(TrustedClientsError, match=r"jku_allow\[0\]"):
        load_trusted_clients(path)


def test_jku_allow_entries_are_normalised_at_load(tmp_path: Path) -> None:
    path = clients_file(
        tmp_path,
        {
            "jwks_url": "https://ehr.example.org/jwks.json",
            "jku_allow": ["HTTPS://EHR.Example.org:443/a/./b/../keys"],
        },
    )
    (prefix,) = load_trusted_clients(path)[ISS].jku_allow
    assert prefix.url == "https://ehr.example.org/a/keys"


def test_key_sets_are_cached_not_fetched_per_request(client: TestClient, jwks_server: JwksServer) -> None:
    for _ in range(5):
        assert call(client, token()).status_code == 200
    assert jwks_server.hits == 1


def test_rotated_key_is_picked_up_by_refetching(
    client: TestClient, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert call(client, token()).status_code == 200
    jwks_server.jwks = {"keys": [jwk(EC_KEY_2, "ec-2")]}  # the EHR rotates its key
    import cds_hooks.keysets as auth_module

    monkeypatch.setattr(auth_module, "REFETCH_INTERVAL_S", 0.0)
    assert call(client, token(EC_KEY_2, "ES384", "ec-2")).status_code == 200
    assert jwks_server.hits == 2


def test_unknown_kid_refetches_at_most_once_a_minute(client: TestClient, jwks_server: JwksServer) -> None:
    assert call(client, token()).status_code == 200
    for _ in range(5):
        assert_refused(call(client, token(EC_KEY_2, "ES384", f"nope-{uuid.uuid4()}")))
    assert jwks_server.hits == 1  # the first fetch was under a minute ago


def test_key_server_down_fails_closed(tmp_path: Path, jwks_server: JwksServer) -> None:
    url = jwks_server.url
    jwks_server.stop()
    trusted = clients_file(tmp_path, {"jwks_url": url})
    with TestClient(
        create_app(make_settings(tmp_path, auth="jwt", trusted_clients=trusted, public_url=BASE))
    ) as c:
        assert_refused(call(c, token()))


def test_inline_jwks(tmp_path: Path) -> None:
    trusted = clients_file(tmp_path, {"jwks": {"keys": [jwk(RSA_KEY, "inline-1")]}})
    with TestClient(
        create_app(make_settings(tmp_path, auth="jwt", trusted_clients=trusted, public_url=BASE))
    ) as c:
        assert call(c, token(RSA_KEY, "RS384", "inline-1")).status_code == 200


@respx.mock
def test_cds_hooks_sandbox_token_shape_verifies(tmp_path: Path) -> None:
    # The public sandbox signs ES384, names its key with kid and its JWK Set with jku, typ JWT.
    sandbox_iss, sandbox_jku = (
        "https://sandbox.cds-hooks.org",
        "https://sandbox.cds-hooks.org/.well-known/jwks.json",
    )
    respx.get(sandbox_jku).mock(return_value=httpx.Response(200, json={"keys": [jwk(EC_KEY, "sandbox-key")]}))
    trusted = tmp_path / "trusted.yaml"
    trusted.write_text(
        yaml.safe_dump(
            {
                "clients": [
                    {
                        "iss": sandbox_iss,
                        "jwks_url": sandbox_jku,
                        "jku_allow": ["https://sandbox.cds-hooks.org/"],
                    }
                ]
            }
        )
    )
    now = int(time.time())
    sandbox_token = jwt.encode(
        {
            "iss": sandbox_iss,
            "sub": "48163c5e-88b5-4cb3-92d3-23b800caa927",
            "aud": BASE + SIGN,
            "exp": now + 300,
            "iat": now + 1,
            "jti": str(uuid.uuid4()),
        },  # its iat can be 1 s ahead
        EC_KEY,
        algorithm="ES384",
        headers={"typ": "JWT", "kid": "sandbox-key", "jku": sandbox_jku},
    )
    with TestClient(
        create_app(make_settings(tmp_path, auth="jwt", trusted_clients=trusted, public_url=BASE))
    ) as c:
        assert call(c, sandbox_token).status_code == 200


# ---- configuration ----------------------------------------------------------------------------
def test_jwt_mode_without_trusted_clients_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(TrustedClientsError), TestClient(create_app(make_settings(tmp_path, auth="jwt"))):
        pass


@pytest.mark.parametrize(
    "entry",
    [
        {"jwks_url": "http://ehr.example.org/jwks"},  # not https
        {},  # no key source
        {"jwks": {"keys": []}, "jwks_url": "https://x"},  # both
        {"jwks_url": "https://x", "jku_allow": "https://x"},  # not a list
        {"jwks": "keys"},
    ],
)
def test_invalid_trusted_clients_file_is_refused(tmp_path: Path, entry: dict[str, Any]) -> None:
    with pytest.raises(TrustedClientsError):
        load_trusted_clients(clients_file(tmp_path, entry))


def test_the_token_never_reaches_the_log(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    bad = token(iss="https://evil.example")
    call(client, bad)
    assert "untrusted iss" in caplog.text and bad not in caplog.text


def test_a_refusal_names_the_endpoint_kind_not_the_path(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    client.post("/cds-services/patient-Jane-Doe-1970/feedback?mrn=123456", json={})
    refused = [r for r in caplog.records if r.getMessage().startswith("request refused")]
    assert [getattr(r, "endpoint", None) for r in refused] == ["feedback"]
    assert not any("Jane" in str(vars(r)) or "123456" in str(vars(r)) for r in caplog.records)


# ---- CORS and headers -------------------------------------------------------------------------
def test_cors_preflight_for_a_configured_origin(tmp_path: Path, auth_settings: dict[str, Any]) -> None:
    settings = make_settings(tmp_path, cors_origins="https://ehr-ui.example.org", **auth_settings)
    with TestClient(create_app(settings)) as c:
        for path in (DISCOVERY, SIGN, SIGN + "/feedback"):
            response = c.options(
                path,
                headers={
                    "origin": "https://ehr-ui.example.org",
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "authorization,content-type",
                },
            )
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "https://ehr-ui.example.org"
            assert "access-control-allow-credentials" not in response.headers


def test_cors_is_closed_by_default(client: TestClient) -> None:
    response = client.options(
        SIGN, headers={"origin": "https://ehr-ui.example.org", "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_security_headers_on_every_answer(client: TestClient) -> None:
    for response in (client.get("/healthz"), call(client, None)):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert "server" not in response.headers


def rejections(client: TestClient, reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'osteoguard_jwt_rejections_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_refusals_are_counted_by_reason_without_client_values(client: TestClient) -> None:
    before = rejections(client, "untrusted iss")
    assert_refused(call(client, token(iss="https://attacker.example")))
    assert rejections(client, "untrusted iss") == before + 1
    assert "attacker" not in client.get("/metrics").text


def test_a_token_ledger_that_cannot_be_written_is_503_not_500(client: TestClient) -> None:
    class FullDisk:
        def execute(self, *args: Any) -> Any:
            raise sqlite3.OperationalError("database or disk is full")

    ledger = client.app.state.verifier.ledger  # type: ignore[attr-defined]
    real, ledger._db = ledger._db, FullDisk()
    try:
        response = call(client, token())
    finally:
        ledger._db = real
    assert response.status_code == 503
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "OG-503-STORE"


# ---- reasons an operator can act on (log only; the client still sees a bare 401) -------------
def test_an_aud_mismatch_logs_the_expected_audience(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "http://localhost:8000" + SIGN
    response = client.post(
        SIGN, json=order_sign("r-1"), headers={"authorization": f"Bearer {token(aud=wrong)}"}
    )
    assert response.status_code == 401 and "localhost" not in response.text
    assert f"expected '{BASE + SIGN}', the token has '{wrong}'" in caplog.text


def test_a_fetched_key_without_kid_is_named_in_the_reason(
    client: TestClient, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    without_kid = {k: v for k, v in jwk(EC_KEY_2, "x").items() if k != "kid"}
    jwks_server.jwks = {"keys": [without_kid]}
    response = client.post(
        SIGN, json=order_sign("r-2"), headers={"authorization": f"Bearer {token(EC_KEY_2, kid='ec-2')}"}
    )
    assert response.status_code == 401
    assert "1 key(s) without a kid were ignored" in caplog.text


def test_an_inline_key_without_kid_is_refused_at_start_up(tmp_path: Path) -> None:
    without_kid = {k: v for k, v in jwk(EC_KEY, "x").items() if k != "kid"}
    path = clients_file(tmp_path, {"jwks": {"keys": [without_kid]}})
    with pytest.raises(TrustedClientsError, match=r"jwks.keys\[0\] has no kid"):
        load_trusted_clients(path)


def test_an_http_jwks_url_is_refused_with_the_loopback_exception_named(tmp_path: Path) -> None:
    path = clients_file(tmp_path, {"jwks_url": "http://ehr.example.org/jwks.json"})
    with pytest.raises(TrustedClientsError, match="must be an https URL .plain http only on a loopback host"):
        load_trusted_clients(path)
