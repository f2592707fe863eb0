"""The page's security: no route without a session, no byte of another partner, no traversal,
no POST without its CSRF token, no tampered cookie, no disabled or outdated account."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from web_helpers import (
    B_STRINGS,
    CLOSED,
    OPEN,
    PASSWORDS,
    RESTATED,
    A,
    B,
    build,
    csrf_of,
    login,
)

from pipelines import accounts
from pipelines.web.app import create_app

PAGES = [
    "/",
    f"/bills/{RESTATED}",
    f"/bills/{RESTATED}/by-product",
    f"/bills/{RESTATED}/by-product?region=cn-north-4",
    f"/bills/{RESTATED}/by-customer",
    f"/bills/{RESTATED}/customers/C001",
    f"/invoices/INV-{A}-202610-V2",
    "/exports",
    "/exports/whatever",
    "/bills?month=2026-10",
    "/logout",
]
API = [
    "/v2/bills/partner-bills/bill-cycles",
    "/v2/bills/partner-bills/amount-due",
    f"/v2/bills/partner-bills/postpaid-bill-summary?bill_cycle={RESTATED}",
    f"/v2/bills/partner-bills/estimates?bill_cycle={OPEN}",
    f"/v2/bills/partner-bills/by-product?bill_cycle={RESTATED}",
    f"/v2/bills/partner-bills/by-customer?bill_cycle={RESTATED}",
    f"/v2/bills/partner-bills/customers/C001/bill-lines?bill_cycle={RESTATED}",
    "/v2/bills/partner-bills/export-history",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-sec") / "data"
    facts = build(root)
    return root, facts


@pytest.fixture
def client(site):
    root, _ = site
    with TestClient(create_app(root)) as c:
        yield c


def b_export_ids(root) -> list[str]:
    from web_helpers import B as partner_b

    from pipelines.exports import list_exports

    return [r["export_id"] for r in list_exports(root, partner=partner_b)]


def assert_no_b(body: bytes) -> None:
    for s in B_STRINGS:
        if s == "USD":
            continue
        assert s.encode() not in body, f"{s!r} of partner B leaked"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_without_a_session_redirects_to_login(client, path):
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("path", API)
def test_every_api_route_without_credentials_answers_401(client, path):
    r = client.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    assert "partner_id" not in r.text


def test_healthz_and_login_and_openapi_need_no_session(client):
    assert client.get("/healthz").text == "ok"
    assert client.get("/login").status_code == 200
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")


def test_partner_a_reaches_nothing_of_partner_b(client, site):
    root, facts = site
    login(client, "alice")
    assert client.get("/").status_code == 200
    b_export = b_export_ids(root)[0]
    attempts = [
        f"/?partner={B}",
        f"/bills/{RESTATED}?partner={B}",
        f"/bills/{RESTATED}/by-customer?partner={B}",
        f"/bills/{RESTATED}/customers/G1-secret",
        f"/bills/{RESTATED}/customers/G1-secret?partner={B}",
        f"/invoices/INV-{B}-202609",
        f"/invoices/INV-{B}-202609?partner={B}",
        f"/exports/{b_export}",
        f"/exports?partner={B}",
        f"/v2/bills/partner-bills/amount-due?partner_id={B}",
        f"/v2/bills/partner-bills/postpaid-bill-summary?bill_cycle={CLOSED}&partner_id={B}",
        f"/v2/bills/partner-bills/customers/G1-secret/bill-lines?bill_cycle={RESTATED}",
        f"/v2/bills/partner-bills/export-history?partner_id={B}",
    ]
    for path in attempts:
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert_no_b(r.content)
    # and the pages A may see hold nothing of B either
    for path in PAGES[:6] + ["/exports"] + API:
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code)
        assert_no_b(r.content)


def test_partner_b_cannot_export_as_a_through_the_form(client):
    login(client, "bob")
    page = client.get("/exports")
    r = client.post(
        "/exports",
        data={"month": RESTATED, "formats": "pdf", "csrf_token": csrf_of(page.text), "partner": A},
    )
    assert r.status_code == 404
    assert A.encode() not in r.content


def test_finance_sees_every_partner_and_picks_one(client):
    login(client, "fiona")
    r = client.get(f"/bills/{CLOSED}?partner={B}")
    assert r.status_code == 200 and b"INV-pb-us-202609" in r.content
    r = client.get(f"/bills/{CLOSED}?partner={A}")
    assert r.status_code == 200 and b"INV-pa-cn-202609" in r.content
    assert client.get("/?partner=nobody").status_code == 404
    r = client.get(f"/v2/bills/partner-bills/amount-due?partner_id={B}")
    assert r.json()["partner_id"] == B


TRAVERSALS = [
    "..%2F..%2Fwarehouse.duckdb",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "a%00b",
    "..%5C..%5Cx",
    "%2Fetc%2Fpasswd",
]


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_traversal_in_every_path_parameter_is_404(client, bad):
    login(client, "fiona")
    for template in [
        "/bills/{x}",
        "/bills/{x}/by-product",
        "/bills/{x}/by-customer",
        f"/bills/{RESTATED}/customers/{{x}}",
        "/bills/{x}/customers/C001",
        "/invoices/{x}",
        "/exports/{x}",
        "/v2/bills/partner-bills/customers/{x}/bill-lines?bill_cycle=2026-10&partner_id=pa-cn",
    ]:
        r = client.get(template.format(x=bad))
        assert r.status_code == 404, (template, bad, r.status_code)
        assert b"root:" not in r.content and b"DUCK" not in r.content


def test_traversal_in_query_parameters_is_refused(client):
    login(client, "fiona")
    assert client.get("/?partner=../..").status_code == 404
    assert client.get(f"/bills/{RESTATED}/by-product?region=../../etc").status_code == 404
    r = client.get("/v2/bills/partner-bills/postpaid-bill-summary?bill_cycle=../../x")
    assert r.status_code == 400


def test_post_without_csrf_is_refused(client):
    page = client.get("/login")
    r = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]})
    assert r.status_code == 403
    r = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORDS["alice"], "csrf_token": "forged"},
    )
    assert r.status_code == 403
    login(client, "alice")
    r = client.post("/exports", data={"month": RESTATED, "formats": "pdf"})
    assert r.status_code == 403
    r = client.post("/logout", data={})
    assert r.status_code == 403
    assert client.get("/").status_code == 200  # still signed in
    assert csrf_of(page.text)


def test_tampered_cookie_is_refused(client):
    login(client, "alice")
    cookie = client.cookies.get("koobill_session")
    payload, _, rest = cookie.partition(".")
    raw = base64.b64decode(payload + "=" * (-len(payload) % 4))
    forged = base64.b64encode(raw.replace(b"alice", b"fiona")).decode().rstrip("=")
    client.cookies.set("koobill_session", forged + "." + rest)
    r = client.get(f"/?partner={B}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    client.cookies.set("koobill_session", cookie[:-3] + "abc")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_disabled_user_is_refused_and_disabling_ends_open_sessions(client, site):
    root, _ = site
    r = login(client, "dave", expect=401)
    assert b"disabled" in r.content
    accounts.add_user(root, "erin", "partner", "erin-password-1", A)
    login(client, "erin", "erin-password-1")
    assert client.get("/").status_code == 200
    accounts.disable_user(root, "erin")
    assert client.get("/", follow_redirects=False).status_code == 303
    auth = base64.b64encode(b"erin:erin-password-1").decode()
    assert client.get(API[1], headers={"Authorization": f"Basic {auth}"}).status_code == 401


def test_reset_password_signs_out_open_sessions(client, site):
    root, _ = site
    accounts.add_user(root, "frank", "partner", "frank-password-1", B)
    login(client, "frank", "frank-password-1")
    accounts.reset_password(root, "frank", "frank-password-2")
    assert client.get("/", follow_redirects=False).status_code == 303
    login(client, "frank", "frank-password-1", expect=401)
    login(client, "frank", "frank-password-2")


def test_failed_logins_are_slowed(client):
    for _ in range(3):
        login(client, "bob", "wrong-password", expect=401)
    r = login(client, "bob", "wrong-password", expect=401)
    r = login(client, "bob", expect=429)  # even the right password waits
    assert int(r.headers["retry-after"]) >= 1


def test_logout_ends_the_session(client):
    login(client, "alice")
    page = client.get("/")
    r = client.post("/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_api_tokens_and_basic_auth(client, site):
    root, _ = site
    token = accounts.new_token(root, "alice")
    r = client.get(API[1], headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["partner_id"] == A
    assert client.get(API[1], headers={"Authorization": "Bearer kb_nope"}).status_code == 401
    basic = base64.b64encode(f"bob:{PASSWORDS['bob']}".encode()).decode()
    r = client.get(API[1], headers={"Authorization": f"Basic {basic}"})
    assert r.json()["partner_id"] == B


def test_session_cookie_is_httponly_and_signed_secret_is_private(client, site):
    root, _ = site
    r = login(client, "alice")
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "Max-Age=28800" in cookie
    secret = root / "accounts" / "session-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    users = root / "accounts" / "users.json"
    assert users.stat().st_mode & 0o777 == 0o600
    assert PASSWORDS["alice"] not in users.read_text()
    assert "$argon2id$" in users.read_text()


@pytest.mark.parametrize(
    "target", ["//evil.example", "/\\evil.example", "/\t/evil.example", "https://evil.example"]
)
def test_sign_in_never_redirects_off_site(client, target):
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORDS["alice"],
            "csrf_token": csrf_of(page.text),
            "next": target,
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_sign_in_returns_to_the_page_asked_for(client):
    r = client.get(f"/bills/{RESTATED}", follow_redirects=False)
    page = client.get(r.headers["location"])
    r = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORDS["alice"],
            "csrf_token": csrf_of(page.text),
            "next": f"/bills/{RESTATED}",
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == f"/bills/{RESTATED}"
    assert 'name="next" value="/bills/2026-10"' in page.text
