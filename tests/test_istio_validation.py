"""Our verdict on every case of tests/istio_validation.yaml (Istio's validation rules for
VirtualService and DestinationRule) equals Istio's, or the case names a deliberate
difference (a README bullet).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.model.errors import ValidationError
from controlplane.model.parse import parse_object

TABLE = Path(__file__).with_name("istio_validation.yaml")
# Values too long to write out in the table: a body over Istio's 1 MiB limit, a regex
# over its 1,024 characters.
_PLACEHOLDERS = {"BIG_BODY": "a" * (2 * 1024 * 1024), "LONG_REGEX": "a" * 1025}
_FORMS = ("vs", "route", "dr", "policy")


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    istio: str  # "accept" or "reject"
    field: str
    differs: str
    doc: dict[str, Any]


def _substitute(value: Any) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDERS.get(value, value)
    if isinstance(value, dict):
        return {k: _substitute(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v) for v in value]
    return value


def _document(raw: dict[str, Any]) -> dict[str, Any]:
    """The object a case describes, in one of the table's short forms."""
    [form] = [f for f in _FORMS if f in raw]
    body = _substitute(copy.deepcopy(raw[form]))
    if form == "route":
        form, body = "vs", {"hosts": ["foo.bar"], "http": [body]}
    elif form == "policy":
        form, body = "dr", {"host": "reviews", "trafficPolicy": body}
    kind = "VirtualService" if form == "vs" else "DestinationRule"
    return {"apiVersion": "networking.istio.io/v1", "kind": kind,
            "metadata": {"name": raw["name"], "namespace": "default"}, "spec": body}


def _load() -> tuple[dict[str, str], list[Case]]:
    table = yaml.safe_load(TABLE.read_text())
    cases = [Case(name=c["name"], source=c["source"], istio=c["istio"],
                  field=c.get("field", ""), differs=c.get("differs", ""),
                  doc=_document(c))
             for c in table["cases"]]
    return table["differences"], cases


DIFFERENCES, CASES = _load()


def _names_field(path: str, field: str) -> bool:
    return path == field or path.startswith((f"{field}.", f"{field}["))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verdict_equals_istios(case: Case) -> None:
    expect_accept = (case.istio == "accept") != bool(case.differs)
    try:
        parse_object(case.doc)
    except ValidationError as e:
        assert not expect_accept, f"{case.name} ({case.source}): rejected, Istio accepts: {e}"
        if case.istio == "reject":
            paths = [err.path for err in e.errors]
            assert any(_names_field(p, case.field) for p in paths), \
                f"{case.name}: no error names {case.field}: {e}"
        return
    assert expect_accept, f"{case.name} ({case.source}): accepted, Istio rejects"


def test_table_is_well_formed() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "case names repeat"
    for c in CASES:
        assert c.istio in ("accept", "reject"), c.name
        assert c.source, c.name
        assert bool(c.field) == (c.istio == "reject"), f"{c.name}: field is for rejects"
        assert not c.differs or c.differs in DIFFERENCES, f"{c.name}: unknown difference"
    # Every difference listed stands for at least one case, so none is left stale.
    assert set(DIFFERENCES) == {c.differs for c in CASES if c.differs}


def _case_doc(name: str) -> dict[str, Any]:
    [case] = [c for c in CASES if c.name == name]
    return case.doc


def test_consecutive_errors_warns_and_is_not_translated() -> None:
    """Istio deprecated `consecutiveErrors` and no longer translates it: the 5xx
    detector keeps its default instead of taking that count."""
    rule = parse_object(_case_doc("od-consecutive-errors-deprecated"))
    od = rule.traffic_policy.outlier_detection
    assert od is not None and od.consecutive_5xx_errors == 5
    assert any("consecutiveErrors: deprecated and ignored" in w for w in rule.warnings)


def test_fault_parts_istio_would_not_inject_are_dropped_with_a_warning() -> None:
    vs = parse_object(_case_doc("fault-abort-without-status"))
    assert vs.http[0].fault is None
    assert any("abort: no httpStatus or grpcStatus" in w for w in vs.warnings)
    vs = parse_object(_case_doc("fault-delay-without-duration"))
    assert vs.http[0].fault is None
    assert any("delay: no fixedDelay" in w for w in vs.warnings)


def test_port_settings_given_twice_use_the_first_with_a_warning() -> None:
    rule = parse_object(_case_doc("tp-port-twice"))
    lb = rule.policy("", 80).load_balancer
    assert lb is not None and lb.simple == "RANDOM"
    assert any("port 80 has settings earlier" in w for w in rule.warnings)


def test_zero_connection_limits_mean_envoys_defaults() -> None:
    rule = parse_object(_case_doc("pool-zero-limits"))
    pool = rule.traffic_policy.connection_pool
    assert pool is not None
    assert (pool.max_connections, pool.http1_max_pending_requests, pool.http2_max_requests,
            pool.max_retries) == (None, None, None, None)


def test_weights_are_kept_as_written() -> None:
    vs = parse_object(_case_doc("weights-over-100"))
    assert [d.weight for d in vs.http[0].route] == [550, 500]


def test_wildcard_destination_rule_host_says_it_applies_to_no_service() -> None:
    rule = parse_object(_case_doc("dr-host-star"))
    assert any("wildcard hosts are not matched to services" in w for w in rule.warnings)
