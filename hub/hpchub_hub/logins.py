"""Which login names the hub accepts: a pure check, done before any LDAP traffic.

A login is taken exactly as typed. It is never lowercased, stripped or otherwise rewritten,
because LDAP matches ``uid`` case-insensitively and ignores surrounding spaces: rewriting
``ALICE`` or ``alice `` into ``alice`` could make two different inputs (or, with a looser
pattern, two different directory entries) one hub user. Anything that does not match the
pattern is refused instead.

Characters that mean something in an LDAP filter or DN (``* ( ) \\ , = + < > ; " #``), NUL,
``/`` and whitespace are refused whatever pattern is configured, so a permissive pattern cannot
reopen LDAP injection. (Filter values are escaped as well; this is the second fence.)
"""

from __future__ import annotations

import re

DEFAULT_LOGIN_PATTERN = r"[a-z_][a-z0-9_-]{0,31}"
"""POSIX-portable user names as ``useradd`` accepts them by default, at most 32 characters."""

FORBIDDEN_CHARACTERS = frozenset('\x00*()\\,=+<>;"#/')
"""Refused in any login: LDAP filter and DN metacharacters, NUL, and ``/`` (URL paths)."""

MAX_LOGIN_LENGTH = 256
"""Longer input is refused before the pattern runs (and logged truncated)."""


def compile_login_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a login pattern; it must match the whole login (``fullmatch``), so anchors are
    optional. Raises ``re.error`` for an invalid pattern."""
    return re.compile(pattern)


def login_refusal(login: object, pattern: re.Pattern[str]) -> str | None:
    """Why ``login`` is refused, or None when it is acceptable as a hub and LDAP user name."""
    if not isinstance(login, str) or not login:
        return "empty login"
    if len(login) > MAX_LOGIN_LENGTH:
        return "login too long"
    if any(ch in FORBIDDEN_CHARACTERS for ch in login):
        return "login contains a forbidden character"
    if any(ch.isspace() or not ch.isprintable() for ch in login):
        return "login contains whitespace or a control character"
    if not pattern.fullmatch(login):
        return "login does not match the username pattern"
    return None


def password_refusal(password: object) -> str | None:
    """Why ``password`` is refused before any bind, or None.

    An empty password makes an LDAP simple bind an *unauthenticated* bind, which many servers
    (OpenLDAP included) accept as anonymous: it must never reach the directory. Whitespace-only
    passwords are refused as well (nobody has one; they are a form submitted by mistake).
    """
    if not isinstance(password, str) or not password:
        return "empty password"
    if not password.strip():
        return "whitespace-only password"
    return None


def loggable(value: object, limit: int = 40) -> str:
    """A value safe to put in a log line: repr() (no raw newlines or NULs), truncated."""
    text = repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}...({len(text)} chars)"
    return text
