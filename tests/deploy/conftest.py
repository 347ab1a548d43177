"""Fixtures for the deployment tests: the Helm chart rendered by Helm's own engine, offline.

``helm_python`` (PyPI ``helm-python-sdk``) binds Helm 4's Go library through ctypes, so no
``helm`` binary, cluster or network is involved. ``render(overrides)`` renders the chart with
``ci/ci-values.yaml`` (the defaults plus the two required values) and the overrides merged in,
and returns the manifests as parsed objects.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "osteoguard"
CI_VALUES = yaml.safe_load((CHART_DIR / "ci" / "ci-values.yaml").read_text(encoding="utf-8"))
RELEASE = "og"
NAMESPACE = "clinical"
FULLNAME = "og-osteoguard"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` deep-merged into a copy of ``base`` (maps merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_chart(chart_dir: Path, values: dict[str, Any]) -> list[Manifest]:
    """Every object the chart renders (NOTES.txt excluded), parsed."""
    with helm.Chart.load(chart_dir) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(values: dict[str, Any]) -> str:
    with helm.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return rendered["osteoguard/templates/NOTES.txt"]


@pytest.fixture
def render() -> Render:
    """``render(overrides=None, *, base=CI_VALUES, chart_dir=CHART_DIR)``."""

    def _render(
        overrides: dict[str, Any] | None = None,
        *,
        base: dict[str, Any] = CI_VALUES,
        chart_dir: Path = CHART_DIR,
    ) -> list[Manifest]:
        return render_chart(chart_dir, merge(base, overrides or {}))

    return _render


def only(objects: list[Manifest], kind: str) -> Manifest:
    """The one object of ``kind``; fails if there are none or several."""
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(objects: list[Manifest]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def server_pod(objects: list[Manifest]) -> Manifest:
    """The Deployment's pod spec."""
    spec: Manifest = only(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def pod_annotations(objects: list[Manifest]) -> dict[str, str]:
    """The Deployment's pod-template annotations."""
    annotations: dict[str, str] = only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    return annotations


def container(objects: list[Manifest]) -> Manifest:
    (main,) = server_pod(objects)["containers"]
    return dict(main)


def env(objects: list[Manifest]) -> dict[str, Any]:
    """The server container's environment: name -> value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


def secret_data(secret: Manifest) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
