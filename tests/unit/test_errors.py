"""fedai.protocol.errors: codes, HTTP statuses and the JSON error body."""

from __future__ import annotations

from typing import Any

import pytest

from fedai.protocol.errors import STATUS, ErrorCode, FedaiError, KeyFormatError

# the codes and statuses the protocol started with (docs/decisions.md#errors)
DOCUMENTED_STATUSES = {
    "invalid_json": 400,
    "invalid_event": 400,
    "too_large": 413,
    "invalid_signature": 401,
    "stale": 401,
    "expired": 401,
    "replay": 409,
    "wrong_recipient": 403,
    "forbidden": 403,
    "unknown_model": 404,
    "rate_limited": 429,
    "capacity_exceeded": 429,
    "no_capacity": 503,
    "payment_required": 402,
    "upstream_error": 502,
    "upstream_timeout": 504,
    "internal": 500,
}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_a_status(code: ErrorCode) -> None:
    assert code in STATUS
    err = FedaiError(code, "m")
    assert err.status == STATUS[code]
    assert 400 <= err.status <= 599


@pytest.mark.parametrize(("name", "status"), DOCUMENTED_STATUSES.items())
def test_documented_codes_and_statuses(name: str, status: int) -> None:
    assert FedaiError(name, "m").status == status


def test_code_from_string_and_unknown_code() -> None:
    err = FedaiError("stale", "old")
    assert err.code is ErrorCode.STALE
    assert str(err) == "old"
    assert err.message == "old"
    assert err.retry_after_ms is None
    with pytest.raises(ValueError, match="nope"):
        FedaiError("nope", "m")


@pytest.mark.parametrize("code", list(ErrorCode))
def test_to_dict_from_dict_round_trip(code: ErrorCode) -> None:
    err = FedaiError(code, f"message for {code}")
    body = err.to_dict()
    assert body == {"error": {"code": code.value, "message": f"message for {code}"}}
    back = FedaiError.from_dict(body, STATUS[code])
    assert back.code is code
    assert back.message == err.message
    assert back.retry_after_ms is None


def test_retry_after_ms_carried() -> None:
    err = FedaiError(ErrorCode.RATE_LIMITED, "slow down", retry_after_ms=1500)
    body = err.to_dict()
    assert body == {"error": {"code": "rate_limited", "message": "slow down", "retry_after_ms": 1500}}
    back = FedaiError.from_dict(body, 429)
    assert back.code is ErrorCode.RATE_LIMITED
    assert back.retry_after_ms == 1500
    # zero is a value, not an absence
    assert FedaiError(ErrorCode.NO_CAPACITY, "x", retry_after_ms=0).to_dict()["error"]["retry_after_ms"] == 0


@pytest.mark.parametrize(
    ("retry", "expected"),
    [(250, 250), (250.7, 250), (True, None), ("250", None), (None, None), ([1], None)],
)
def test_from_dict_retry_after_types(retry: Any, expected: int | None) -> None:
    body = {"error": {"code": "no_capacity", "message": "busy", "retry_after_ms": retry}}
    assert FedaiError.from_dict(body, 503).retry_after_ms == expected


@pytest.mark.parametrize(
    "body",
    [
        None,
        "oops",
        42,
        [],
        {},
        {"error": "string"},
        {"error": None},
        {"error": {}},
        {"error": {"message": "no code"}},
        {"error": {"code": "not_a_code", "message": "x"}},
        {"error": {"code": 400, "message": "x"}},
        {"detail": "starlette style"},
    ],
)
def test_from_dict_garbage_is_upstream_error(body: Any) -> None:
    err = FedaiError.from_dict(body, 418)
    assert err.code is ErrorCode.UPSTREAM_ERROR
    assert err.status == 502
    assert "418" in err.message


def test_from_dict_tolerates_missing_or_non_string_message() -> None:
    assert FedaiError.from_dict({"error": {"code": "forbidden"}}).message == ""
    assert FedaiError.from_dict({"error": {"code": "forbidden", "message": 7}}).message == "7"


def test_repr_and_exception_behaviour() -> None:
    err = FedaiError(ErrorCode.REPLAY, "seen")
    assert repr(err) == "FedaiError('replay', 'seen')"
    assert isinstance(err, Exception)
    with pytest.raises(FedaiError, match="seen"):
        raise err


def test_key_format_error_is_a_value_error() -> None:
    assert issubclass(KeyFormatError, ValueError)
    assert not issubclass(KeyFormatError, FedaiError)
