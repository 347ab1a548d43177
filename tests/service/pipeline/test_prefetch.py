"""The prefetch templates (SPEC §2): the bone-agent keys ask for every code of the class, briefly."""

from __future__ import annotations

from urllib.parse import parse_qsl

from service.pipeline.prefetch import PREFETCH_KEYS, prefetch_templates
from service.ruleset.model import RuleSet


def query(template: str) -> tuple[str, dict[str, str]]:
    path, _, params = template.partition("?")
    return path, dict(parse_qsl(params))


def test_the_bone_agent_keys_follow_vitamin_d() -> None:
    at = PREFETCH_KEYS.index("vitaminD")
    assert PREFETCH_KEYS[at + 1 : at + 3] == ("boneAgents", "boneAgentStatements")


def test_the_templates_declare_every_key_in_order(ruleset: RuleSet) -> None:
    assert tuple(prefetch_templates(ruleset)) == PREFETCH_KEYS


def test_bone_agent_requests_of_every_status_are_asked_for_by_every_class_code(ruleset: RuleSet) -> None:
    path, params = query(prefetch_templates(ruleset)["boneAgents"])
    assert path == "MedicationRequest"
    assert set(params) == {"patient", "code"}  # no status: a completed zoledronic acid order counts
    assert set(params["code"].split(",")) == ruleset.medications["bone-agent"].codes


def test_bone_agent_statements_ask_for_the_same_codes(ruleset: RuleSet) -> None:
    templates = prefetch_templates(ruleset)
    path, params = query(templates["boneAgentStatements"])
    assert path == "MedicationStatement"
    assert params["code"] == query(templates["boneAgents"])[1]["code"]


def test_medication_codes_are_written_without_their_system(ruleset: RuleSet) -> None:
    template = prefetch_templates(ruleset)["boneAgents"]
    assert "rxnorm" not in template and "%7C" not in template
    assert "%7C" in prefetch_templates(ruleset)["boneDensity"]  # observation codes keep system|code


def test_medication_codes_are_listed_in_numeric_order(ruleset: RuleSet) -> None:
    codes = query(prefetch_templates(ruleset)["boneAgents"])[1]["code"].split(",")
    assert codes == sorted(codes, key=int)


def test_every_template_stays_under_8_kb(ruleset: RuleSet) -> None:
    for key, template in prefetch_templates(ruleset).items():
        assert len(template.encode()) < 8 * 1024, key
