"""Login and password checks done before any LDAP traffic."""

from __future__ import annotations

import pytest

from hpchub_hub.logins import (
    DEFAULT_LOGIN_PATTERN,
    compile_login_pattern,
    loggable,
    login_refusal,
    password_refusal,
)

PATTERN = compile_login_pattern(DEFAULT_LOGIN_PATTERN)
LOOSE = compile_login_pattern(r".+")


@pytest.mark.parametrize("login", ["alice", "bob", "_svc", "a", "carol-2", "x_y-z9", "a" * 32])
def test_accepted_logins(login: str) -> None:
    assert login_refusal(login, PATTERN) is None


@pytest.mark.parametrize(
    "login",
    [
        "",
        "*",
        ")(uid=*",
        "alice)(|(uid=*",
        "alice\x00",
        "\x00",
        "alice,ou=people",
        "uid=alice",
        "alice ",
        " alice",
        "al ice",
        "alice\t",
        "alice\n",
        "ALICE",
        "Alice",
        "alice\\2a",
        "9lives",
        "-alice",
        "a" * 33,
        "a" * 1000,
        "alicé",
        "alice/..",
        "alice+cn=x",
        "alice\u200b",
        None,
        42,
    ],
)
def test_refused_logins(login: object) -> None:
    assert login_refusal(login, PATTERN) is not None


@pytest.mark.parametrize(
    "login", ["*", ")(uid=*", "a\x00", "a,b", "a=b", "a b", "a\\b", "a+b", "a/b", "a\u00a0b"]
)
def test_a_loose_pattern_cannot_reopen_injection(login: str) -> None:
    assert login_refusal(login, LOOSE) is not None


def test_pattern_must_match_whole_login() -> None:
    # "$" alone would accept a trailing newline; fullmatch does not.
    assert login_refusal("alice\n", compile_login_pattern(r"^[a-z]+$")) is not None
    assert login_refusal("alice-x", compile_login_pattern(r"[a-z]+")) is not None


@pytest.mark.parametrize("password", ["", " ", "   ", "\t", "\n", " \t\r\n", None, 0])
def test_blank_passwords_refused(password: object) -> None:
    assert password_refusal(password) is not None


@pytest.mark.parametrize("password", ["secret", " leading", "trailing ", "a b", "*", "\x00x"])
def test_real_passwords_pass(password: str) -> None:
    assert password_refusal(password) is None


def test_loggable_is_escaped_and_truncated() -> None:
    assert loggable("a\nb") == "'a\\nb'"
    assert "\x00" not in loggable("x\x00")
    long = loggable("x" * 500)
    assert long.endswith("(502 chars)") and len(long) < 80
