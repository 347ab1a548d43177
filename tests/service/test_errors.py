"""The error tree: every class has its own stable code, and every one renders as JSON."""

from __future__ import annotations

import inspect

import pytest

from service import errors
from service.errors import PrefetchUnavailable, RuleSetError, ServiceError, operation_outcome

CLASSES = sorted(
    (c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, ServiceError)),
    key=lambda c: c.__name__,
)


def make(cls: type[ServiceError]) -> ServiceError:
    if issubclass(cls, PrefetchUnavailable):
        return cls(["patient"], "no server")
    if issubclass(cls, RuleSetError):
        return cls(["rules/x.yaml:1: bad"])
    if cls.__name__ == "AuthError":
        return cls("a reason for the log")  # type: ignore[call-arg]
    return cls("a message")


def test_every_error_class_is_in_the_tree() -> None:
    assert {c.__name__ for c in CLASSES} == set(errors.__all__) - {"ERROR_CODE_SYSTEM", "operation_outcome"}


def test_codes_are_unique() -> None:
    codes = [c.error_code for c in CLASSES]
    assert len(codes) == len(set(codes)), codes


def test_the_tree_in_the_docstring_names_every_class_and_code() -> None:
    for cls in CLASSES:
        assert cls.__name__ in (errors.__doc__ or ""), cls
        assert cls.error_code in (errors.__doc__ or ""), cls


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_class_renders_as_an_operation_outcome(cls: type[ServiceError]) -> None:
    outcome = operation_outcome(make(cls))
    (issue,) = outcome["issue"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert issue["details"]["coding"][0]["code"] == cls.error_code
    assert issue["details"]["text"]
    assert issue["severity"] == ("error" if cls.status_code < 500 else "fatal")


def test_the_auth_reason_never_reaches_the_client() -> None:
    error = errors.AuthError("kid not in the client's jwks")
    assert "kid" not in str(operation_outcome(error))
