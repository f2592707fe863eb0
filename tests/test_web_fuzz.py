"""Fuzz the JSON API from its own OpenAPI document (schemathesis): no answer is a 500, and a
partner's fuzzed requests never get another partner's data."""

from __future__ import annotations

import base64

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from web_helpers import PASSWORDS, B, build

from pipelines import accounts
from pipelines.web.app import create_app


@pytest.fixture(scope="module")
def operations(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-fuzz") / "data"
    build(root, exports=False)
    for user in ("alice", "fiona"):  # bearer tokens: fast to check, unlike a password hash
        TOKENS[user] = {"Authorization": f"Bearer {accounts.new_token(root, user)}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(root))
    return [result.ok() for result in schema.get_all_operations()]


TOKENS: dict[str, dict[str, str]] = {}


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_basic_auth_is_accepted(operations):
    op = next(o for o in operations if o.path.endswith("/amount-due"))
    case = op.Case()
    assert case.call(headers=basic("alice")).json()["partner_id"] == "pa-cn"


def test_the_document_lists_every_api_route(operations):
    paths = {op.path for op in operations}
    assert {
        "/v2/bills/partner-bills/postpaid-bill-summary",
        "/v2/bills/partner-bills/amount-due",
        "/v2/bills/partner-bills/by-product",
        "/v2/bills/partner-bills/by-customer",
        "/v2/bills/partner-bills/customers/{customer_id}/bill-lines",
        "/v2/bills/partner-bills/estimates",
        "/v2/bills/partner-bills/export-history",
        "/v2/bills/partner-bills/bill-cycles",
    } <= paths
    assert not any(p.startswith("/bills") or p == "/" for p in paths)  # pages are not API


def test_api_never_answers_500(operations):
    calls = {"n": 0}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            for user in ("alice", "fiona"):
                response = case.call(headers=TOKENS[user])
                calls["n"] += 1
                assert response.status_code < 500, (case.path, case.query, response.text[:300])
                if user == "alice":
                    assert B.encode() not in response.content, (case.path, case.query)

        run()
    assert calls["n"] >= 8 * 2 * 5
