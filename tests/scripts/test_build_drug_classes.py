"""scripts/build-drug-classes: VSAC ValueSet expansions in, valid deterministic class files out."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from service.ruleset.classes import load_classes
from service.ruleset.yamlfile import Problems

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-drug-classes"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# One ingredient per member of the script's classes: the smallest input that makes valid files.
INGREDIENTS = {
    "anastrozole": ("84857", "anastrozole"),
    "methyltestosterone": ("6904", "methyltestosterone"),
    "testosterone": ("10379", "testosterone"),
    "alendronate": ("46041", "alendronate"),
    "risedronate": ("73056", "risedronate"),
    "ibandronate": ("115264", "ibandronate"),
    "zoledronic-acid": ("77655", "zoledronic acid"),
    "denosumab": ("993449", "denosumab"),
    "teriparatide": ("32915", "teriparatide"),
    "abaloparatide": ("1921069", "abaloparatide"),
    "romosozumab": ("2123126", "romosozumab"),
    "pamidronate": ("11473", "pamidronate"),
    "etidronate": ("42682", "etidronate"),
    "tiludronate": ("57230", "tiludronate"),
    "clodronate": ("3350", "clodronic acid"),
}


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    # The script has no .py suffix; its dataclasses need it in sys.modules while it loads.
    loader = importlib.machinery.SourceFileLoader("build_drug_classes", str(SCRIPT))
    spec = importlib.util.spec_from_loader("build_drug_classes", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def valueset(oid: str, title: str, concepts: list[tuple[str, str]], tty: str | None = None) -> dict[str, Any]:
    compose: dict[str, Any] = {"include": [{"system": RXNORM, "concept": [{"code": c} for c, _ in concepts]}]}
    if tty:
        compose = {"include": [{"system": RXNORM, "filter": [{"property": "tty", "op": "=", "value": tty}]}]}
    return {
        "resourceType": "ValueSet",
        "id": oid,
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{oid}"}],
        "version": "20250101",
        "title": title,
        "compose": compose,
        "expansion": {
            "timestamp": "2025-05-23T10:00:00-04:00",
            "total": len(concepts),
            "contains": [
                {"system": RXNORM, "version": "05052025", "code": c, "display": d} for c, d in concepts
            ],
        },
    }


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with two synthetic VSAC files, and the manifest saying where they came from."""
    folder = tmp_path / "vsac"
    folder.mkdir()
    drugs = [
        *INGREDIENTS.values(),
        ("199224", "anastrozole 1 MG Oral Tablet"),
        ("151124", "anastrozole 1 MG Oral Tablet [Arimidex]"),
        ("72965", "letrozole"),
        ("993452", "1 ML denosumab 60 MG/ML Prefilled Syringe"),
        ("905093", "{4 (risedronate sodium 35 MG Oral Tablet [Actonel]) } Pack [Actonel 35 4-Week]"),
        ("214553", "estradiol / testosterone"),
        ("310965", "ibuprofen 200 MG Oral Tablet"),
    ]
    files = {
        "ValueSet-2.16.840.1.113762.1.4.9001.1.json": valueset(
            "2.16.840.1.113762.1.4.9001.1", "Drugs", drugs
        ),
        "ValueSet-2.16.840.1.113762.1.4.9001.2.json": valueset(
            "2.16.840.1.113762.1.4.9001.2",
            "Brands",
            [("262485", "Arimidex"), ("993453", "Prolia"), ("753143", "Actonel")],
            tty="BN",
        ),
    }
    entries = []
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content), encoding="utf-8")
        entries.append(
            {"file": name, "repo": "FHIR/packages", "path": f"packages/x/{name}", "commit": "ab" * 20}
        )
    manifest = tmp_path / "sources.yaml"
    manifest.write_text(yaml.safe_dump({"files": entries}), encoding="utf-8")
    return folder, manifest


def build(script: ModuleType, inputs: tuple[Path, Path], out: Path, *extra: str) -> int:
    folder, manifest = inputs
    result: int = script.main([str(folder), "--manifest", str(manifest), "--out", str(out), *extra])
    return result


def test_the_output_is_one_valid_class_file_per_class(
    script: ModuleType, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "rules" / "classes"
    assert build(script, inputs, out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "anastrozole.yaml",
        "bone-agent.yaml",
        "testosterone.yaml",
    ]
    problems = Problems()
    medications = load_classes(tmp_path / "rules", problems)
    assert problems.items == []
    assert medications["anastrozole"].codes == {"84857", "199224", "151124", "262485"}
    assert medications["anastrozole"].not_members == {"72965"}
    assert medications["testosterone"].not_members == {"214553"}
    assert medications["bone-agent"].member("risedronate").codes == {"73056", "753143", "905093"}
    assert "310965" not in medications.by_code  # ibuprofen is in no class


def test_concepts_carry_their_term_type_display_and_sources(
    script: ModuleType, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    build(script, inputs, tmp_path)
    data = yaml.safe_load((tmp_path / "anastrozole.yaml").read_text(encoding="utf-8"))
    concepts = {c["rxcui"]: c for c in data["members"]["anastrozole"]["concepts"]}
    assert {code: c["tty"] for code, c in concepts.items()} == {
        "151124": "SBD",
        "199224": "SCD",
        "262485": "BN",
    }
    assert concepts["262485"]["from"] == ["9001.2"]
    assert concepts["151124"]["display"] == "anastrozole 1 MG Oral Tablet [Arimidex]"
    assert data["snapshot_date"] == "2025-05-23"
    (source,) = [s for s in data["source"] if s["id"] == "9001.2"]
    assert source["oid"] == "2.16.840.1.113762.1.4.9001.2" and source["commit"] == "ab" * 20


def test_names_come_from_ingredients_and_brand_concepts(
    script: ModuleType, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    build(script, inputs, tmp_path)
    data = yaml.safe_load((tmp_path / "bone-agent.yaml").read_text(encoding="utf-8"))
    names = data["members"]["denosumab"]["names"]
    assert {"name": "Prolia", "from": "BN 993453"} in names
    assert names[0] == {"name": "denosumab", "from": "ingredient 993449"}
    # A pack name that a kept brand already covers adds nothing.
    assert [n["name"] for n in data["members"]["risedronate"]["names"]] == ["risedronate", "Actonel"]


def test_the_same_inputs_give_the_same_bytes_and_check_passes(
    script: ModuleType, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    build(script, inputs, tmp_path / "a")
    build(script, inputs, tmp_path / "b")
    for name in ("anastrozole.yaml", "bone-agent.yaml", "testosterone.yaml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert build(script, inputs, tmp_path / "a", "--check") == 0
    (tmp_path / "a" / "testosterone.yaml").write_text("stale\n", encoding="utf-8")
    assert build(script, inputs, tmp_path / "a", "--check") == 1


def test_a_file_missing_from_the_manifest_is_refused(
    script: ModuleType, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, manifest = inputs
    (folder / "ValueSet-unknown.json").write_text(json.dumps(valueset("1.2.3", "X", [])), encoding="utf-8")
    with pytest.raises(SystemExit, match="not in the manifest"):
        build(script, inputs, tmp_path / "out")


def test_print_fetch_lists_a_git_show_per_manifest_file(
    script: ModuleType, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, manifest = inputs
    assert script.main(["--manifest", str(manifest), "--print-fetch", "/tmp/vsac"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mkdir -p /tmp/vsac"
    assert lines[1].startswith(f'git -C "$PACKAGES" show {"ab" * 20}:packages/x/ValueSet-')


def test_the_committed_manifest_names_every_source_the_class_files_cite() -> None:
    manifest = yaml.safe_load((SCRIPT.parent / "build-drug-classes.sources.yaml").read_text(encoding="utf-8"))
    fetched = {(f["path"], f["commit"]) for f in manifest["files"]}
    for path in sorted((SCRIPT.parents[1] / "rules" / "classes").glob("*.yaml")):
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["source"]:
            assert (source["path"], source["commit"]) in fetched, (path.name, source["id"])
