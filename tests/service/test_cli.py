"""The osteoguard command: evaluate, rules check, rules test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.cli import main
from service.ruleset.export import deployed_files
from service.settings import PACKAGED_RULES_DIR, get_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def _fresh_settings() -> None:
    get_settings.cache_clear()


def test_evaluate_prints_the_cards_of_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    # The example has fixed dates (as an EHR would send them); --today pins the evaluation date.
    assert main(["evaluate", str(EXAMPLES / "order-sign-low-estradiol.json"), "--today", "2026-11-28"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [c["source"]["topic"]["code"] for c in body["cards"]] == [
        "low-estradiol",
        "baseline-dexa",
        "osteopenia-monitoring",
        "testosterone-monitoring",
        "vitamin-d",
    ]
    assert body["cards"][0]["summary"] == (
        "Estradiol 8.2 pg/mL on 2026-09-01 is below 10 pg/mL: consider a lower anastrozole dose"
    )


def test_evaluate_as_of_another_day_changes_what_is_recent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(EXAMPLES / "order-sign-low-estradiol.json"), "--today", "2027-06-01"]) == 0
    codes = [c["source"]["topic"]["code"] for c in json.loads(capsys.readouterr().out)["cards"]]
    assert "low-estradiol" not in codes and "estradiol-monitoring" in codes


def test_evaluate_links_the_rule_pages_of_the_local_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(EXAMPLES / "order-sign-low-estradiol.json"), "--today", "2026-11-28"]) == 0
    card = json.loads(capsys.readouterr().out)["cards"][0]
    assert card["source"]["url"] == "http://127.0.0.1:8000/docs/rules/low-estradiol"
    assert card["links"][0]["type"] == "absolute" and card["links"][0]["url"].startswith("https://")


def test_evaluate_links_the_rule_pages_at_the_public_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OSTEOGUARD_PUBLIC_URL", "https://bone.example.org")
    assert main(["evaluate", str(EXAMPLES / "order-sign-low-estradiol.json"), "--today", "2026-11-28"]) == 0
    card = json.loads(capsys.readouterr().out)["cards"][0]
    assert card["source"]["url"] == "https://bone.example.org/docs/rules/low-estradiol"


@pytest.mark.parametrize(
    "content", ["{not json", '{"hook": "order-sign"}', '{"hook": "nope", "hookInstance": "x", "context": {}}']
)
def test_evaluate_bad_input_is_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["evaluate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("osteoguard evaluate:")


def test_evaluate_missing_file_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "/nonexistent/request.json"]) == 2


def test_rules_check_passes_on_the_packaged_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check"]) == 0
    assert "9 rules OK" in capsys.readouterr().out


def test_rules_check_reports_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(PACKAGED_RULES_DIR, rules)
    path = rules / "monitoring/vitamin-d/rule.yaml"
    path.write_text(path.read_text().replace("indicator: info", "indicator: loud"))
    assert main(["rules", "check", str(rules)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and "indicator must be one of" in err


def test_rules_test_runs_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    passed = int(last.split()[0])
    assert passed >= 60 and last.endswith("0 failed")


def test_rules_test_fails_when_a_case_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(PACKAGED_RULES_DIR, rules)
    path = rules / "dosing/low-estradiol/rule.yaml"
    path.write_text(path.read_text().replace("e2_low_pg_ml: 10 ", "e2_low_pg_ml: 5 "))
    assert main(["rules", "test", str(rules)]) == 1
    assert "FAIL low-estradiol/" in capsys.readouterr().out


def test_evaluate_integer_beyond_pythons_limit_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"hook": "order-sign", "n": ' + "9" * 5000 + "}")
    assert main(["evaluate", str(path)]) == 2


def test_rules_export_chart_makes_an_exact_copy_and_removes_stale_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chart = tmp_path / "chart"
    stale = chart / "files" / "rules" / "old" / "gone" / "rule.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("title: removed rule\n", encoding="utf-8")
    assert main(["rules", "export-chart", "--chart", str(chart), "--dir", str(PACKAGED_RULES_DIR)]) == 0
    copied = chart / "files" / "rules"
    assert deployed_files(copied) == deployed_files(PACKAGED_RULES_DIR)
    assert not stale.exists() and not (copied / "old").exists()
    assert not list(copied.rglob("cases"))
    assert main(["rules", "export-chart", "--chart", str(chart), "--dir", str(PACKAGED_RULES_DIR)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("up to date")


def test_serve_refuses_unknown_rule_ids_in_the_settings_with_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.settings import get_settings

    settings_file = tmp_path / "clients.yaml"
    settings_file.write_text("defaults:\n  rules: {vitamin-dee: false}\n")
    monkeypatch.setenv("OSTEOGUARD_AUTH", "off")
    monkeypatch.setenv("OSTEOGUARD_TRUSTED_CLIENTS", str(settings_file))
    monkeypatch.setenv("OSTEOGUARD_DATABASE_URL", f"sqlite:///{tmp_path / 'og.db'}")
    get_settings.cache_clear()
    try:
        assert main(["serve", "--port", "1"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err.strip()
    assert err.startswith("osteoguard: ") and "\n" not in err
    assert "unknown rule id(s) vitamin-dee" in err


def test_serve_in_jwt_mode_without_a_public_url_is_exit_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = tmp_path / "clients.yaml"
    clients.write_text("clients: [{iss: https://ehr.example.org, jwks: {keys: []}}]\n")
    monkeypatch.setenv("OSTEOGUARD_AUTH", "jwt")
    monkeypatch.setenv("OSTEOGUARD_TRUSTED_CLIENTS", str(clients))
    assert main(["serve"]) == 2  # before uvicorn binds anything
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OSTEOGUARD_PUBLIC_URL" in err


@pytest.mark.parametrize(
    "value", ["ftp://osteoguard.example.org", "osteoguard.example.org", "https://x/?q=1"]
)
def test_serve_with_a_public_url_that_is_not_a_base_url_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    clients = tmp_path / "clients.yaml"
    clients.write_text("clients: [{iss: https://ehr.example.org, jwks: {keys: []}}]\n")
    monkeypatch.setenv("OSTEOGUARD_TRUSTED_CLIENTS", str(clients))
    monkeypatch.setenv("OSTEOGUARD_PUBLIC_URL", value)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "OSTEOGUARD_PUBLIC_URL" in err and "must be an absolute" in err


def test_serve_with_a_bad_setting_value_is_exit_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTEOGUARD_FHIR_TIMEOUT_S", "-1")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OSTEOGUARD_FHIR_TIMEOUT_S" in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OSTEOGUARD_MAX_HEADER_BYTES", "100"),
        ("OSTEOGUARD_MAX_HEADER_BYTES", "lots"),
        ("OSTEOGUARD_HEADER_TIMEOUT_S", "0"),
        ("OSTEOGUARD_BODY_TIMEOUT_S", "-5"),
        ("OSTEOGUARD_MAX_CONNECTIONS", "0"),
        ("OSTEOGUARD_FHIR_MAX_BYTES", "10"),
    ],
)
def test_serve_with_a_bad_limit_is_exit_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"osteoguard: {variable}=")


def test_serve_with_an_audit_spool_dir_that_cannot_be_written_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("OSTEOGUARD_AUTH", "off")
    monkeypatch.setenv("OSTEOGUARD_DATABASE_URL", f"sqlite:///{tmp_path / 'og.db'}")
    monkeypatch.setenv("OSTEOGUARD_AUDIT_SPOOL_DIR", str(blocked / "spool"))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OSTEOGUARD_AUDIT_SPOOL_DIR" in err and "cannot be written" in err


def test_serve_with_a_listed_fhir_server_that_is_not_a_url_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTEOGUARD_FHIR_PRIVATE_SERVERS", "https://10.0.0.5/fhir,not-a-url")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OSTEOGUARD_FHIR_PRIVATE_SERVERS" in err and "not-a-url" in err


# ---- configuration errors: one line naming the setting, exit 2, never a traceback (SPEC §1) ----
@pytest.fixture
def serve_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working configuration for `serve` (auth off, a SQLite file); uvicorn is never started."""
    monkeypatch.setenv("OSTEOGUARD_AUTH", "off")
    monkeypatch.setenv("OSTEOGUARD_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("OSTEOGUARD_PUBLIC_URL", "https://osteoguard.example.org")  # jwt mode needs it
    monkeypatch.setattr("service.logs.configure_logging", lambda level: None)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("uvicorn started"))
    return tmp_path


def serve_refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_serve_unknown_auth_is_one_line(
    serve_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTEOGUARD_AUTH", "yes")
    assert serve_refused(capsys).startswith("osteoguard: OSTEOGUARD_AUTH='yes'")


def test_serve_jwt_without_trusted_clients_is_one_line(
    serve_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTEOGUARD_AUTH", "jwt")
    assert "OSTEOGUARD_TRUSTED_CLIENTS is not set" in serve_refused(capsys)


def test_serve_broken_trusted_clients_file_is_one_line(
    serve_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = serve_env / "clients.yaml"
    broken.write_text("clients: [\n")
    monkeypatch.setenv("OSTEOGUARD_AUTH", "jwt")
    monkeypatch.setenv("OSTEOGUARD_TRUSTED_CLIENTS", str(broken))
    assert serve_refused(capsys).startswith("osteoguard: OSTEOGUARD_TRUSTED_CLIENTS: ")


def test_serve_missing_trusted_clients_file_is_one_line(
    serve_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTEOGUARD_AUTH", "jwt")
    monkeypatch.setenv("OSTEOGUARD_TRUSTED_CLIENTS", str(serve_env / "nowhere.yaml"))
    assert "nowhere.yaml" in serve_refused(capsys)


def test_serve_missing_rules_folder_is_one_line(
    serve_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTEOGUARD_RULES_DIR", str(serve_env / "no-rules"))
    assert serve_refused(capsys).startswith("osteoguard: OSTEOGUARD_RULES_DIR=")


def test_serve_broken_rule_set_points_at_rules_check(
    serve_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = serve_env / "rules"
    shutil.copytree(PACKAGED_RULES_DIR, broken)
    (broken / "ruleset.yaml").write_text("name: x\n")
    monkeypatch.setenv("OSTEOGUARD_RULES_DIR", str(broken))
    assert "osteoguard rules check" in serve_refused(capsys)


def test_serve_unreachable_postgresql_is_one_line_without_the_password(
    serve_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTEOGUARD_DATABASE_URL", "postgresql://og:s3cret@127.0.0.1:1/og")
    err = serve_refused(capsys)
    assert err.startswith("osteoguard: OSTEOGUARD_DATABASE_URL: ") and "s3cret" not in err


def test_serve_port_in_use_is_one_line(serve_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert "already in use" in serve_refused(capsys, "--port", str(port))


@pytest.mark.parametrize(
    "args", [["--port", "70000"], ["--workers", "0"], ["--host", "no.such.host.invalid"]]
)
def test_serve_bad_arguments_are_one_line(
    serve_env: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert serve_refused(capsys, *args).startswith(f"osteoguard: {args[0]} ")


def test_serve_starts_uvicorn_when_the_configuration_is_good(
    serve_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, object]] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: started.append(k))
    assert main(["serve", "--port", "0"]) == 0
    assert started and started[0]["access_log"] is False


def test_any_command_reports_a_bad_setting_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OSTEOGUARD_FHIR_TIMEOUT_S", "never")
    assert main(["evaluate", str(EXAMPLES / "order-sign-low-estradiol.json")]) == 2
    assert capsys.readouterr().err.startswith("osteoguard: OSTEOGUARD_FHIR_TIMEOUT_S='never'")


# ---- the store is never created by a command that only reads it ----------------------------------
def test_feedback_report_refuses_to_create_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "osteoguard.db"
    monkeypatch.setenv("OSTEOGUARD_DATABASE_URL", f"sqlite:///{missing}")
    assert main(["feedback", "report"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not missing.exists()


def test_feedback_report_refuses_an_empty_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    empty = tmp_path / "other.db"
    sqlite3.connect(empty).close()
    monkeypatch.setenv("OSTEOGUARD_DATABASE_URL", f"sqlite:///{empty}")
    assert main(["feedback", "report"]) == 2
    assert "no Osteoguard store" in capsys.readouterr().err


# ---- --version ----------------------------------------------------------------------------------
def test_version_names_the_package_and_the_rule_set(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "osteoguard 0.1.0, rule set anastrozole-bone 2026.12.0"


# ---- client keygen / token ------------------------------------------------------------------------
def test_client_keygen_prints_a_trusted_clients_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from cds_hooks.trust import load_trusted_clients

    key = tmp_path / "key.pem"
    assert main(["client", "keygen", "--iss", "https://ehr.example.org", "--out", str(key)]) == 0
    printed = tmp_path / "trusted-clients.yaml"
    printed.write_text(capsys.readouterr().out)
    entry = yaml.safe_load(printed.read_text())["clients"][0]
    assert entry["jwks"]["keys"][0]["kid"] and "d" not in entry["jwks"]["keys"][0]  # public only
    assert set(load_trusted_clients(printed)) == {"https://ehr.example.org"}
    assert key.stat().st_mode & 0o077 == 0


def test_client_keygen_never_overwrites_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key.pem"
    key.write_text("mine")
    assert main(["client", "keygen", "--iss", "https://ehr.example.org", "--out", str(key)]) == 2
    assert key.read_text() == "mine"


def test_client_token_carries_the_cds_hooks_claims(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import jwt

    key = tmp_path / "key.pem"
    main(["client", "keygen", "--iss", "https://ehr.example.org", "--out", str(key)])
    kid = capsys.readouterr().out.split("kid ")[1].split()[0]
    assert main(["client", "token", "--key", str(key), "--aud", "http://127.0.0.1:8000/cds-services"]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token)["kid"] == kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "exp", "iat", "jti"}
    assert (
        claims["aud"] == "http://127.0.0.1:8000/cds-services" and claims["iss"] == "https://ehr.example.org"
    )


def test_client_token_refuses_a_file_that_is_not_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.pem"
    other.write_text("-----BEGIN PRIVATE KEY-----\n")
    assert main(["client", "token", "--key", str(other), "--aud", "http://127.0.0.1:8000/x"]) == 2
    assert "--key" in capsys.readouterr().err
