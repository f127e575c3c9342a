"""Intake authentication: `Authorization: Bearer <token>` and/or HTTP basic auth, as
Alertmanager's `http_config` and Grafana's contact point send them. Constant-time compares."""

from __future__ import annotations

import base64
import hmac

from pydantic import SecretStr


class IntakeAuth:
    def __init__(self, bearer: SecretStr | None, basic: SecretStr | None) -> None:
        self._bearer = bearer.get_secret_value().encode() if bearer else None
        self._basic = basic.get_secret_value().encode() if basic else None

    @property
    def open(self) -> bool:
        return self._bearer is None and self._basic is None

    def allows(self, authorization: str | None) -> bool:
        """Does this Authorization header carry a configured credential?"""
        if self.open:
            return True
        if not authorization or " " not in authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        # header bytes that are not UTF-8 reach us as surrogate escapes; keep them as bytes
        given = credentials.strip().encode("utf-8", "surrogateescape")
        if scheme == "bearer" and self._bearer is not None:
            return hmac.compare_digest(given, self._bearer)
        if scheme == "basic" and self._basic is not None:
            try:
                decoded = base64.b64decode(given, validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(decoded, self._basic)
        return False
