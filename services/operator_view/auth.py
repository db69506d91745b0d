"""Who may see and who may act: a bearer token per role, and signed login cookies for browsers.

Why stateless cookies: the view may be restarted or replaced by Serve at any time; a cookie that carries its
role, expiry and a nonce under an HMAC keyed by the role tokens survives that, and rotating either token
invalidates every cookie. The raw token never goes into the cookie, a URL or a log line. Form posts are
CSRF-safe twice over: the cookie is ``SameSite=Strict`` and every form carries a token derived from the
cookie's nonce, which another site cannot read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from pydantic import SecretStr

from zsad_core.errors import ZsadError

COOKIE_NAME = "zsad_session"
CSRF_FIELD = "csrf"


class Role(StrEnum):
    """What a caller may do; an operator may do everything a viewer may."""

    VIEWER = "viewer"
    OPERATOR = "operator"


class NotAuthenticatedError(ZsadError):
    """No valid token or session: the caller must log in (HTTP 401)."""

    reason = "not_authenticated"


class ForbiddenError(ZsadError):
    """The caller's role may not do this, or a form's CSRF token is wrong (HTTP 403)."""

    reason = "forbidden"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        role: what it may do.
        csrf: the token its forms must carry; ``None`` for bearer-token callers, whose requests a browser
            cannot forge (a page on another site cannot set the ``Authorization`` header).
    """

    role: Role
    csrf: str | None = None

    def require(self, role: Role) -> None:
        """Raise :class:`ForbiddenError` unless this caller has ``role`` (or a stronger one)."""
        if role is Role.OPERATOR and self.role is not Role.OPERATOR:
            raise ForbiddenError("this action needs the operator role")

    def check_form(self, submitted: str | None) -> None:
        """Raise :class:`ForbiddenError` when a cookie session's form lacks its CSRF token."""
        if self.csrf is not None and not (submitted and hmac.compare_digest(submitted, self.csrf)):
            raise ForbiddenError("the form's CSRF token is missing or wrong; reload the page")


class ViewAuth:
    """Checks tokens and issues/verifies session cookies.

    Args:
        viewer_token, operator_token: the roles' secrets; a role without one cannot be used.
        session_ttl_s: lifetime of a login cookie.
    """

    def __init__(self, viewer_token: SecretStr | None, operator_token: SecretStr | None, session_ttl_s: int) -> None:
        self._tokens = {
            role: token.get_secret_value().encode()
            for role, token in ((Role.VIEWER, viewer_token), (Role.OPERATOR, operator_token))
            if token is not None
        }
        material = b"\0".join(self._tokens.get(role, b"") for role in Role)
        self._key = hashlib.sha256(b"zsad-view-session\0" + material).digest()
        self.session_ttl_s = session_ttl_s

    def role_of_token(self, token: str) -> Role | None:
        """The role whose token this is; every role is compared, so timing tells nothing."""
        found = None
        for role, expected in self._tokens.items():
            if hmac.compare_digest(token.encode(), expected):
                found = role
        return found

    def issue_session(self, role: Role, now: float | None = None) -> str:
        """A cookie value for ``role`` valid for ``session_ttl_s``."""
        expires = int((time.time() if now is None else now) + self.session_ttl_s)
        payload = f"{role.value}.{expires}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._sign('session', payload)}"

    def session(self, cookie: str, now: float | None = None) -> Principal | None:
        """The principal of a cookie value, or ``None`` if it is forged, expired or of a rotated token."""
        payload, _, signature = cookie.rpartition(".")
        if not payload or not hmac.compare_digest(signature, self._sign("session", payload)):
            return None
        role_name, expires, nonce = [*payload.split("."), "", ""][:3]
        if role_name not in Role.__members__.values() or not expires.isdigit():
            return None
        if int(expires) < (time.time() if now is None else now) or Role(role_name) not in self._tokens:
            return None
        return Principal(Role(role_name), csrf=self._sign("csrf", nonce))

    def authenticate(self, authorization: str | None, cookie: str | None) -> Principal:
        """The caller of a request from its ``Authorization`` header or session cookie.

        Raises:
            NotAuthenticatedError: neither gives a valid role.
        """
        if authorization:
            scheme, _, token = authorization.partition(" ")
            role = self.role_of_token(token.strip()) if scheme.lower() == "bearer" else None
            if role is None:
                raise NotAuthenticatedError("the bearer token is not valid")
            return Principal(role)
        principal = self.session(cookie) if cookie else None
        if principal is None:
            raise NotAuthenticatedError("log in with a viewer or operator token")
        return principal

    def _sign(self, purpose: str, payload: str) -> str:
        return hmac.new(self._key, f"{purpose}:{payload}".encode(), hashlib.sha256).hexdigest()
