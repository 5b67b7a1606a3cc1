"""Building auth_state from an LDAP entry and group list (pure)."""

from __future__ import annotations

import pytest

from hpchub_hub.authstate import (
    AccountError,
    AccountSpec,
    build_auth_state,
    check_template,
    projects_of,
)

ENTRY = {
    "uid": ["alice"],
    "uidNumber": ["1001"],
    "gidNumber": ["1000"],
    "homeDirectory": ["/home/alice"],
}
GROUPS = ["hpcusers", "proj-gpu", "proj-astro", "hpc-admins"]
SPEC = AccountSpec(admin_groups=("hpc-admins",))


def test_full_state_with_templates() -> None:
    state = build_auth_state("alice", "uid=alice,ou=people,dc=hpc,dc=test", ENTRY, GROUPS, SPEC)
    assert state == {
        "version": 1,
        "login": "alice",
        "dn": "uid=alice,ou=people,dc=hpc,dc=test",
        "uid_number": 1001,
        "gid_number": 1000,
        "home": "/home/alice",
        "work": "/work/alice",
        "scratch": "/scratch/alice",
        "projects": ["proj-astro", "proj-gpu"],
        "groups": ["hpc-admins", "hpcusers", "proj-astro", "proj-gpu"],
        "admin": True,
    }


def test_attributes_win_over_templates_and_names_are_case_insensitive() -> None:
    spec = AccountSpec(
        work_attribute="hpcWork",
        scratch_attribute="hpcScratch",
        projects_attribute="hpcProject",
        project_groups="",
    )
    entry = {
        **ENTRY,
        "hpcwork": ["/gpfswork/rech/abc/alice"],
        "HPCSCRATCH": ["/gpfsscratch/a"],
        "hpcProject": ["abc", "xyz"],
    }
    state = build_auth_state("alice", "dn", entry, GROUPS, spec)
    assert state["work"] == "/gpfswork/rech/abc/alice"
    assert state["scratch"] == "/gpfsscratch/a"
    assert state["projects"] == ["abc", "xyz"]
    assert state["admin"] is False


def test_template_fields_and_missing_home() -> None:
    spec = AccountSpec(
        home_attribute="", home_template="/h/{gid_number}/{login}", work_template="/w/{uid_number}"
    )
    state = build_auth_state("alice", "dn", ENTRY, [], spec)
    assert (state["home"], state["work"], state["projects"]) == ("/h/1000/alice", "/w/1001", [])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"uidNumber": []}, "no uidNumber"),
        ({"gidNumber": ["abc"]}, "not a number"),
        ({"uidNumber": ["0"]}, "out of range"),
        ({"uidNumber": ["-5"]}, "out of range"),
        ({"homeDirectory": ["relative/home"]}, "absolute"),
        ({"homeDirectory": ["/home/../etc"]}, "normalized"),
        ({"homeDirectory": ["/home/al\nice"]}, "absolute"),
    ],
)
def test_unusable_entries(change: dict[str, list[str]], message: str) -> None:
    with pytest.raises(AccountError, match=message):
        build_auth_state("alice", "dn", {**ENTRY, **change}, [], SPEC)


def test_projects_glob_is_case_sensitive_and_sorted() -> None:
    assert projects_of(["proj-b", "PROJ-c", "proj-a", "other"], ["proj-a", ""], "proj-*") == [
        "proj-a",
        "proj-b",
    ]


@pytest.mark.parametrize("template", ["/work/{user}", "work/{login}", "/w/{0}", "/w/{login"])
def test_bad_templates(template: str) -> None:
    with pytest.raises(ValueError):
        check_template(template)


def test_spec_attributes_list() -> None:
    spec = AccountSpec(work_attribute="hpcWork")
    assert spec.attributes() == ["gidNumber", "homeDirectory", "hpcWork", "uid", "uidNumber"]
