"""The ``osteoguard`` command: serve, evaluate, explain, rules check|test|export-chart, db upgrade,
feedback report, client keygen|token, --version.

Bad configuration is one line on stderr naming the setting, and exit 2, never a traceback
(SPEC §1): every command runs inside :func:`main`'s handler for ConfigurationError.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import socket
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service import __version__
from service.errors import ConfigurationError
from service.settings import get_settings

if TYPE_CHECKING:
    from cds_hooks.models import CdsResponse
    from service.pipeline.registry import Registry
    from service.ruleset.scenarios import Observer
    from service.store.database import Store


def _check_listen(host: str, port: int, workers: int) -> None:
    """The address can be listened on (a port in use is a configuration error, SPEC §1)."""
    if not 0 <= port < 65536:
        raise ConfigurationError(f"--port {port}: not a TCP port (0-65535)")
    if workers < 1:
        raise ConfigurationError(f"--workers {workers}: at least 1")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigurationError(f"--host {host}: not a name or address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"--port {port}: {host}:{port} is already in use (pick another --port)"
                ) from None
            raise ConfigurationError(f"--host {host} --port {port}: cannot listen ({exc.strerror})") from None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import check_configuration
    from service.errors import ConfigurationError
    from service.logs import configure_logging
    from service.settings import check_serving, settings_or_exit_line

    try:
        settings = settings_or_exit_line()
        check_serving(settings)
    except ConfigurationError as exc:  # one clear line, exit 2 (service/errors.py)
        print(f"osteoguard: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    _check_listen(args.host, args.port, args.workers)
    check_configuration(settings)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        # httptools with our limits (header bytes, header/body deadlines, connections); a
        # string, so each worker process imports it. No WebSockets: nothing here speaks them.
        http="service.http.server:LimitedHttpToolsProtocol",
        ws="none",
        log_level=settings.log_level,
        log_config=None,
        server_header=False,
        access_log=False,  # service.edge writes one access line per request, without raw paths
        timeout_graceful_shutdown=20,
    )
    return 0


def _registry(rules_dir: Path | None = None, today: date | None = None) -> Registry:
    from service.engine.adapter import RuleEngine
    from service.pipeline.registry import Registry, utc_today
    from service.ruleset.docs import docs_base
    from service.ruleset.loader import load_ruleset

    settings = get_settings()
    ruleset = load_ruleset(rules_dir or settings.rules_dir)
    return Registry(
        ruleset,
        RuleEngine(ruleset),
        (lambda: today) if today else utc_today,
        docs_base=docs_base(settings.public_url),  # the cards' source.url, as the service would give it
    )


class _Unreadable(Exception):
    """The request file could not be read as JSON (the reason is already on stderr)."""


def _read_request(command: str, file: str) -> Any:
    """The JSON of a request file, or a one-line reason on stderr and :class:`_Unreadable`."""
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except OSError as exc:
        print(f"osteoguard {command}: cannot read {file}: {exc.strerror}", file=sys.stderr)
        raise _Unreadable from exc
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: e.g. an integer longer than Python's 4,300-digit conversion limit.
        print(f"osteoguard {command}: {file} is not valid JSON: {exc}", file=sys.stderr)
        raise _Unreadable from exc


def _evaluate(args: argparse.Namespace) -> int:
    from cds_hooks.models import to_json_dict
    from service.errors import ServiceError

    try:
        payload = _read_request("evaluate", args.file)
    except _Unreadable:
        return 2
    try:
        registry = _registry(today=args.today)
        hook = payload.get("hook") if isinstance(payload, dict) else None
        service = registry.service_for_hook(str(hook))
        response = asyncio.run(_call_with_fhir(registry, service.id, payload))
    except ConfigurationError:
        raise  # main() prints it as one line naming the setting
    except ServiceError as exc:
        print(f"osteoguard evaluate: {exc.status_code}: {exc.message}", file=sys.stderr)
        return 2
    except Exception as exc:  # an internal error must still not print a traceback with patient data
        print(f"osteoguard evaluate: internal error ({type(exc).__name__})", file=sys.stderr)
        return 1
    print(json.dumps(to_json_dict(response), indent=2, ensure_ascii=False))
    return 0


async def _call_with_fhir(
    registry: Registry, service_id: str, payload: object, observe: Observer | None = None
) -> CdsResponse:
    """Call the service; data missing from the file is fetched from its fhirServer, if any."""
    from cds_hooks.fhir_client import FhirFetcher
    from service.app import new_http_client

    settings = get_settings()
    budget = settings.fhir_timeout_s
    async with new_http_client(budget) as http:
        registry.fetcher = FhirFetcher(
            http, budget, listed=settings.fhir_private_server_set, max_bytes=settings.fhir_max_bytes
        )
        return await registry.call(service_id, payload, observe=observe)


def _explain(args: argparse.Namespace) -> int:
    from service.errors import ServiceError
    from service.explain import Explanation

    try:
        payload = _read_request("explain", args.file)
    except _Unreadable:
        return 2
    try:
        registry = _registry(today=args.today)
        if args.rule and args.rule not in {r.id for r in registry.ruleset.rules}:
            print(f"osteoguard explain: no rule {args.rule!r} in the rule set", file=sys.stderr)
            return 2
        hook = payload.get("hook") if isinstance(payload, dict) else None
        service = registry.service_for_hook(str(hook))
        explanation = Explanation(
            service.id, service.hook, registry.today(), f"{registry.ruleset.name} {registry.ruleset.version}"
        )
        response = asyncio.run(_call_with_fhir(registry, service.id, payload, explanation.observe))
    except ServiceError as exc:
        print(f"osteoguard explain: {exc.status_code}: {exc.message}", file=sys.stderr)
        return 2
    except Exception as exc:  # an internal error must still not print a traceback with patient data
        print(f"osteoguard explain: internal error ({type(exc).__name__})", file=sys.stderr)
        return 1
    explanation.cards = list(response.cards)
    if not explanation.facts:
        explanation.outcome = "the call is not about anastrozole, or the patient is deceased (no cards)"
    if args.rule:
        explanation.only(args.rule)
    if args.json:
        print(json.dumps(explanation.as_json(), indent=2, ensure_ascii=False))
    else:
        print(explanation.render(), end="")
    return 0


def _rules_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else get_settings().rules_dir


def _rules_check(args: argparse.Namespace) -> int:
    from service.ruleset.check import assess

    # The judge a reload uses: what this refuses, a running service refuses too.
    verdict = assess(_rules_dir(args))
    if verdict.engine is not None:
        verdict.engine.close()
    for problem in verdict.problems:
        print(problem, file=sys.stderr)
    if verdict.problems:
        print(f"{len(verdict.problems)} problem(s)", file=sys.stderr)
        return 1
    assert verdict.ruleset is not None
    ruleset = verdict.ruleset
    cases = f"{verdict.cases} scenario cases pass" if verdict.cases else "no scenario cases here to run"
    print(f"rule set {ruleset.name} {ruleset.version}: {len(ruleset.rules)} rules OK, {cases}")
    return 0


def _rules_test(args: argparse.Namespace) -> int:
    from service.errors import RuleSetError
    from service.ruleset.scenarios import load_cases, run_case

    root = _rules_dir(args)
    try:
        registry = _registry(root)
        cases = load_cases(root)
    except (RuleSetError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    failed = 0
    for case in cases:
        explanation = None
        if args.explain:
            from service.explain import Explanation

            explanation = Explanation("", "", registry.today(), registry.ruleset.version)
        outcome = asyncio.run(run_case(case, registry, explanation.observe if explanation else None))
        mark = "PASS" if outcome.ok else "FAIL"
        print(f"{mark} {case.rule_id}/{case.path.stem}: {case.title}")
        for problem in outcome.problems:
            print(f"     {case.path}: {problem} (fired: {', '.join(outcome.fired) or 'nothing'})")
        if explanation is not None and not outcome.ok:
            _print_case_explanation(explanation, case.rule_id, outcome.fired)
        failed += not outcome.ok
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _print_case_explanation(explanation: object, rule_id: str, fired: list[str]) -> None:
    """A failing case's explanation, for its own rule, without what identifies the patient."""
    from service.explain import Explanation

    assert isinstance(explanation, Explanation)
    explanation.rules = [r for r in explanation.rules if r.id == rule_id] or explanation.rules
    explanation.service, explanation.hook = "scenario case", rule_id
    text = explanation.render(identifying=False)
    print("\n".join(f"     | {line}" for line in text.splitlines()))
    print(f"     | fired rules: {', '.join(fired) or 'none'}")


def _rules_export_chart(args: argparse.Namespace) -> int:
    from service.ruleset.export import export

    target = Path(args.chart) / "files" / "rules"
    changes = export(_rules_dir(args), target)
    for change in changes:
        print(change)
    print(f"{target}: {'up to date' if not changes else f'{len(changes)} file(s) changed'}")
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from service.store.database import upgrade

    upgrade(get_settings().database_url)
    print("database is at the latest schema")
    return 0


def _feedback_report(args: argparse.Namespace) -> int:
    from service.errors import RuleSetError
    from service.ruleset.loader import load_ruleset
    from service.settings import patient_hash_key
    from service.store.database import Store
    from service.store.report import build_report, reason_displays, render_table

    settings = get_settings()
    try:  # the override reasons' display text (clients may send back only system and code)
        displays = reason_displays(load_ruleset(settings.rules_dir))
    except RuleSetError:
        displays = {}
    store = Store(settings.database_url, patient_hash_key(settings))
    try:
        _require_existing(store)
        store.open()
        reports = build_report(store, args.since, displays)
    finally:
        store.close()
    if args.json:
        print(json.dumps([r.as_json() for r in reports], indent=2))
    else:
        print(render_table(reports))
    return 0


def _require_existing(store: Store) -> None:
    """Refuse to create a new, empty database: report what was looked for instead."""
    from service.errors import StoreUnavailable

    try:
        found = store.holds_a_store()
    except StoreUnavailable as exc:
        raise ConfigurationError(f"OSTEOGUARD_DATABASE_URL: {exc.message}") from None
    if not found:
        raise ConfigurationError(
            f"OSTEOGUARD_DATABASE_URL: no Osteoguard store at {store.describe()}; "
            "set it to the database the service uses (nothing was created)"
        )


def _client_keygen(args: argparse.Namespace) -> int:
    from cds_hooks.client import make_key

    key = make_key(args.iss, Path(args.out))
    print(f"osteoguard: wrote the private key to {args.out} (keep it secret)", file=sys.stderr)
    # stdout is a whole trusted-clients file: `... > trusted-clients.yaml` works as it is.
    print(f"# trusted client {key.iss}: ES384 key, kid {key.kid}")
    print(key.trusted_clients_yaml(), end="")
    return 0


def _client_token(args: argparse.Namespace) -> int:
    from cds_hooks.client import sign_token

    print(sign_token(Path(args.key), args.aud, lifetime_s=args.lifetime))
    return 0


class _Version(argparse.Action):
    """``--version``: the package and the rule set it serves (from OSTEOGUARD_RULES_DIR)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object, **__: object) -> None:
        import yaml

        try:
            head = yaml.safe_load((get_settings().rules_dir / "ruleset.yaml").read_text(encoding="utf-8"))
            rules = f"rule set {head['name']} {head['version']}"
        except ConfigurationError as exc:
            parser.exit(2, f"osteoguard: {exc.message}\n")
        except (OSError, yaml.YAMLError, TypeError, KeyError):
            rules = "rule set unreadable"
        print(f"osteoguard {__version__}, {rules}")
        parser.exit(0)


def _since(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osteoguard", description="Osteoguard, a CDS Hooks 2.0 service.")
    parser.add_argument("--version", action=_Version, nargs=0, help="print the package and rule-set versions")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)
    evaluate = sub.add_parser("evaluate", help="evaluate one CDS Hooks request file offline")
    evaluate.add_argument("file")
    evaluate.add_argument(
        "--today",
        type=date.fromisoformat,
        help="evaluate as of this date (YYYY-MM-DD) instead of today, e.g. to replay a logged call",
    )
    evaluate.set_defaults(func=_evaluate)
    explain = sub.add_parser(
        "explain", help="evaluate one request file and show, per rule, the facts and each condition"
    )
    explain.add_argument("file")
    explain.add_argument("--today", type=date.fromisoformat, help="evaluate as of this date (YYYY-MM-DD)")
    explain.add_argument("--rule", help="explain only this rule id")
    explain.add_argument("--json", action="store_true", help="JSON for tools instead of text")
    explain.set_defaults(func=_explain)
    rules = sub.add_parser("rules", help="validate or test the rule set")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser(
        "check", help="judge a rule set as a reload does: files, manifest, templates, its own cases"
    )
    check.add_argument("dir", nargs="?")
    check.set_defaults(func=_rules_check)
    test = rules_sub.add_parser("test", help="run the rule scenario fixtures")
    test.add_argument("dir", nargs="?")
    test.add_argument(
        "--explain",
        action="store_true",
        help="for a failing case, print why its rule did or did not fire (no patient-identifying data)",
    )
    test.set_defaults(func=_rules_test)
    export_chart = rules_sub.add_parser(
        "export-chart", help="copy the rule set into the Helm chart (helm/osteoguard/files/rules)"
    )
    export_chart.add_argument("--chart", default="helm/osteoguard", help="the chart folder")
    export_chart.add_argument(
        "--dir", help="the rules folder (default: OSTEOGUARD_RULES_DIR or the packaged rules)"
    )
    export_chart.set_defaults(func=_rules_export_chart)
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply database migrations").set_defaults(func=_db_upgrade)
    feedback = sub.add_parser("feedback", help="clinician feedback on cards")
    feedback_sub = feedback.add_subparsers(dest="feedback_command", required=True)
    report = feedback_sub.add_parser("report", help="per-rule counts of cards issued, accepted, overridden")
    report.add_argument("--json", action="store_true", help="JSON instead of a table")
    report.add_argument("--since", type=_since, help="only cards issued on or after this date (YYYY-MM-DD)")
    report.set_defaults(func=_feedback_report)
    client = sub.add_parser("client", help="a CDS client's key and tokens, for local trials")
    client_sub = client.add_subparsers(dest="client_command", required=True)
    keygen = client_sub.add_parser("keygen", help="make a key pair and print its trusted-clients entry")
    keygen.add_argument("--iss", required=True, help="the client's issuer URL (the JWT's iss)")
    keygen.add_argument("--out", default="client-key.pem", help="where the private key goes")
    keygen.set_defaults(func=_client_keygen)
    token = client_sub.add_parser("token", help="sign a CDS Hooks JWT with a key from keygen")
    token.add_argument("--key", required=True, help="the private key file keygen wrote")
    token.add_argument(
        "--aud",
        required=True,
        help="the exact URL of the endpoint called, e.g. http://127.0.0.1:8000/cds-services",
    )
    token.add_argument("--lifetime", type=int, default=300, help="seconds until exp (default 300)")
    token.set_defaults(func=_client_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigurationError as exc:
        print(f"osteoguard: {' '.join(exc.message.split())}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
