"""Tokens, session cookies and CSRF tokens of the operator view, checked against hand-made forgeries."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.operator_view.auth import ForbiddenError, NotAuthenticatedError, Principal, Role, ViewAuth

VIEWER = "v" * 20
OPERATOR = "o" * 20


def make_auth(ttl: int = 60) -> ViewAuth:
    return ViewAuth(SecretStr(VIEWER), SecretStr(OPERATOR), ttl)


def test_each_token_gives_its_role_and_others_none() -> None:
    auth = make_auth()
    assert auth.role_of_token(VIEWER) is Role.VIEWER
    assert auth.role_of_token(OPERATOR) is Role.OPERATOR
    assert auth.role_of_token(VIEWER[:-1]) is None
    assert auth.role_of_token("") is None


def test_bearer_header_and_missing_credentials() -> None:
    auth = make_auth()
    assert auth.authenticate(f"Bearer {OPERATOR}", None) == Principal(Role.OPERATOR)
    with pytest.raises(NotAuthenticatedError):
        auth.authenticate(f"Basic {OPERATOR}", None)
    with pytest.raises(NotAuthenticatedError):
        auth.authenticate(None, None)


def test_session_cookie_round_trip_expiry_and_tampering() -> None:
    auth = make_auth(ttl=60)
    cookie = auth.issue_session(Role.VIEWER, now=1000.0)
    principal = auth.session(cookie, now=1059.0)
    assert principal is not None and principal.role is Role.VIEWER and principal.csrf
    assert auth.session(cookie, now=1061.0) is None  # expired
    forged = cookie.replace("viewer.", "operator.", 1)  # a raised role breaks the signature
    assert auth.session(forged, now=1000.0) is None
    assert VIEWER not in cookie and OPERATOR not in cookie  # the secret never travels in the cookie


def test_rotating_a_token_invalidates_every_cookie() -> None:
    cookie = make_auth().issue_session(Role.OPERATOR)
    rotated = ViewAuth(SecretStr(VIEWER), SecretStr("n" * 20), 60)
    assert rotated.session(cookie) is None


def test_two_sessions_have_different_csrf_tokens_and_forms_are_checked() -> None:
    auth = make_auth()
    first, second = (auth.session(auth.issue_session(Role.OPERATOR)) for _ in range(2))
    assert first is not None and second is not None and first.csrf != second.csrf
    first.check_form(first.csrf)
    with pytest.raises(ForbiddenError):
        first.check_form(second.csrf)
    with pytest.raises(ForbiddenError):
        first.check_form(None)
    Principal(Role.OPERATOR).check_form(None)  # bearer callers carry no cookie a site could ride on


def test_viewer_may_not_act() -> None:
    with pytest.raises(ForbiddenError):
        Principal(Role.VIEWER).require(Role.OPERATOR)
    Principal(Role.OPERATOR).require(Role.OPERATOR)
    Principal(Role.VIEWER).require(Role.VIEWER)
