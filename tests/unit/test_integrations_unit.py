"""Pure parts of the integration layer: Retry-After parsing, JSON conversion of database values, health
conditions, and the project checks of integrations.yaml (no servers)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from progressive_cli.integrations.base import jsonable
from progressive_cli.integrations.conditions import check
from progressive_cli.integrations.http import retry_after


def test_retry_after_seconds_and_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after("5", now) == 5.0 and retry_after(" 1.5 ", now) == 1.5 and retry_after("-3", now) == 0.0
    date = dt.datetime.fromtimestamp(now + 30, dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after(date, now) == 30.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0  # in the past
    assert retry_after(None, now) is None and retry_after("soon", now) is None and retry_after("", now) is None


@given(st.text(max_size=80))
def test_retry_after_never_raises(text: str) -> None:
    value = retry_after(text, 1_700_000_000.0)
    assert value is None or value >= 0


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=20)
    | st.decimals(allow_nan=True) | st.datetimes() | st.dates() | st.uuids() | st.timedeltas(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    | st.tuples(children, children),
    max_leaves=20,
)


@given(_values)
def test_jsonable_always_gives_strict_json(value: object) -> None:
    json.dumps(jsonable(value), allow_nan=False)


def test_jsonable_conversions() -> None:
    row = {"n": decimal.Decimal("3"), "x": decimal.Decimal("2.5"), "at": dt.datetime(2026, 1, 2, 3, 4, 5),
           "id": uuid.UUID(int=1), "raw": b"\x00\xff", "nan": float("nan"), "gap": dt.timedelta(minutes=2)}
    assert jsonable(row) == {"n": 3, "x": 2.5, "at": "2026-01-02T03:04:05", "id": str(uuid.UUID(int=1)),
                             "raw": "AP8=", "nan": None, "gap": 120.0}


def test_health_conditions() -> None:
    assert check(["status == 200", "response_time < 500"], status=200, response_time=12.0, body=None) == []
    failed = check(["status == 200", "body.status == 'UP'"], status=503, response_time=3.0, body={"status": "DOWN"})
    assert failed == ["status == 200 (status=503, response_time=3ms)",
                      "body.status == 'UP' (status=503, response_time=3ms)"]
    # an expression error is a failed condition, not an exception
    assert check(["body.missing.deeper > 1"], status=200, response_time=1.0, body="text")


@given(st.integers(100, 599), st.floats(0, 1e6), st.one_of(st.none(), st.text(max_size=10),
                                                           st.dictionaries(st.text(max_size=5), st.integers())))
def test_conditions_never_raise(status: int, elapsed: float, body: object) -> None:
    check(["status < 500", "response_time < 500", "body.ok == true"], status=status, response_time=elapsed,
          body=body)


def test_validate_checks_integration_cross_references(cli, make_project) -> None:
    root = make_project({
        "integrations.yaml": """
            integrations:
              - id: api
                type: http
                base_url: http://127.0.0.1:9
                health: {conditions: ["status ==", "response_time < 500"]}
              - id: pg
                type: postgres
                dsn: postgresql://localhost/x
              - id: vec
                type: vector
                path: .progressive/chroma
                embedding: {integration: pg}
        """,
        "workflows/w.yaml": """
            name: w
            inputs:
              table: {type: string}
            steps:
              - id: q
                type: database_operation
                integration: pg
                operation: query
                params: {sql: "SELECT * FROM ${{ inputs.table }}"}
        """,
    })
    r = cli("-p", str(root), "validate")
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert any(ln.startswith("integrations.yaml:5:37:") and "health.conditions[0]" in ln for ln in lines), lines
    assert any("embedding.integration" in ln and "'pg' is a postgres database" in ln for ln in lines), lines
    assert any(ln.startswith("workflows/w.yaml:") and "SQL must be static text" in ln for ln in lines), lines


def test_a_missing_driver_names_the_extra(monkeypatch) -> None:
    import pytest

    from progressive_cli.config.integrations import IntegrationsFile
    from progressive_cli.errors import StepError
    from progressive_cli.integrations import hub as hub_module

    monkeypatch.setitem(hub_module.CONNECTORS, "redis", ("progressive_cli.integrations.not_installed", "X"))
    config = IntegrationsFile.model_validate({"integrations": [{"id": "cache", "type": "redis",
                                                                "url": "redis://127.0.0.1:1"}]})
    with pytest.raises(StepError) as info:
        hub_module.Integrations(config.integrations).connector("cache")
    assert info.value.kind == "STEP_ERROR" and info.value.exit_code == 2
    assert "pip install 'progressive[redis]'" in info.value.message
