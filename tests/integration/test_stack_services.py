"""The stack's real services answer the way the hub and the operator will use them."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator

import asyncssh
import ldap3
import psycopg2
import pytest
import redis as redis_py
import sqlalchemy
import yaml
from ldap3.core.exceptions import LDAPPasswordIsMandatoryError
from ldap3.utils.conv import escape_filter_chars
from redis.backoff import NoBackoff
from redis.retry import Retry

from hpchub_stack import users
from hpchub_stack.ldap import ADMIN_GROUP, LdapDirectory
from hpchub_stack.postgres import Postgres
from hpchub_stack.process import run, wait_until
from hpchub_stack.redis import Redis
from hpchub_stack.sshd import SSHServer
from hpchub_stack.traefik import Traefik

# -- LDAP ---------------------------------------------------------------------------------


def reader(ldap: LdapDirectory) -> ldap3.Connection:
    """A connection bound as the hub's read-only service account."""
    return ldap3.Connection(ldap.url, ldap.reader_dn, ldap.reader_password, auto_bind=True)


def find_dn(ldap: LdapDirectory, login: str) -> str:
    """Search step of search-then-bind: the DN of the person with this uid."""
    conn = reader(ldap)
    conn.search(ldap.people_dn, f"(&(objectClass=posixAccount)(uid={escape_filter_chars(login)}))")
    assert len(conn.entries) == 1
    return str(conn.entries[0].entry_dn)


def user_can_bind(ldap: LdapDirectory, dn: str, password: str) -> bool:
    """Bind step of search-then-bind."""
    conn = ldap3.Connection(ldap.url, dn, password)
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()


def test_ldap_search_then_bind_alice(ldap: LdapDirectory) -> None:
    dn = find_dn(ldap, "alice")
    assert dn == ldap.user_dn("alice")
    assert user_can_bind(ldap, dn, users.user("alice").password)


def test_ldap_wrong_password_fails(ldap: LdapDirectory) -> None:
    assert not user_can_bind(ldap, find_dn(ldap, "alice"), "not-alices-password")


def test_ldap_empty_password_is_not_a_login(ldap: LdapDirectory) -> None:
    """An empty password turns a simple bind into an "unauthenticated" bind (RFC 4513 5.1.2),
    which some servers accept as anonymous: the hub must reject empty passwords itself.
    Here ldap3 refuses to send it, and slapd refuses it too (unauthenticated binds are off
    unless ``allow bind_anon_cred``); other servers (e.g. Active Directory) may accept it."""
    dn = find_dn(ldap, "alice")
    with pytest.raises(LDAPPasswordIsMandatoryError):
        user_can_bind(ldap, dn, "")
    raw = run(["ldapwhoami", "-x", "-H", ldap.url, "-D", dn, "-w", ""], check=False)
    assert raw.returncode == 53, raw.stderr  # unwillingToPerform
    assert b"unauthenticated bind" in raw.stderr


def test_ldap_anonymous_cannot_read_people(ldap: LdapDirectory) -> None:
    conn = ldap3.Connection(ldap.url, auto_bind=True)
    conn.search(ldap.people_dn, "(uid=*)")
    assert conn.entries == []


def test_ldap_groups_of_alice(ldap: LdapDirectory) -> None:
    conn = reader(ldap)
    conn.search(ldap.groups_dn, "(&(objectClass=posixGroup)(memberUid=alice))", attributes=["cn"])
    assert {e.cn.value for e in conn.entries} == {"hpcusers", "proj-astro", "proj-gpu"}
    conn.search(ldap.groups_dn, f"(cn={ADMIN_GROUP})", attributes=["memberUid"])
    assert list(conn.entries[0].memberUid.values) == ["carol"]


def test_ldap_person_carries_unix_ids(ldap: LdapDirectory) -> None:
    alice = users.user("alice")
    conn = reader(ldap)
    conn.search(
        ldap.people_dn,
        "(uid=alice)",
        attributes=["uidNumber", "gidNumber", "homeDirectory", "mail", "userPassword"],
    )
    entry = conn.entries[0]
    assert (entry.uidNumber.value, entry.gidNumber.value) == (alice.uid, alice.gid)
    assert entry.homeDirectory.value == alice.home
    assert entry.mail.value == "alice@hpc.test"
    assert not entry.userPassword.values  # the reader never sees password hashes


# -- PostgreSQL ---------------------------------------------------------------------------


def test_postgres_select_1(postgres: Postgres) -> None:
    conn = psycopg2.connect(postgres.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1, current_user, current_database()")
            assert cur.fetchone() == (1, postgres.role, "jupyterhub")
    finally:
        conn.close()


def test_postgres_url_works_with_sqlalchemy(postgres: Postgres) -> None:
    engine = sqlalchemy.create_engine(postgres.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


# -- Redis --------------------------------------------------------------------------------


def test_redis_ping_set_get(redis: Redis) -> None:
    client = redis_py.Redis.from_url(redis.url)
    assert client.ping()
    client.set("hpchub-test", "value")
    assert client.get("hpchub-test") == b"value"
    client.delete("hpchub-test")
    client.close()


def test_redis_requires_its_password(redis: Redis) -> None:
    no_retry = Retry(NoBackoff(), retries=0)  # an auth failure is final, not worth retrying
    client = redis_py.Redis.from_url(f"redis://{redis.endpoint}/0", retry=no_retry)
    with pytest.raises(redis_py.AuthenticationError):
        client.ping()
    client.close()


# -- SSH ----------------------------------------------------------------------------------


async def ssh_whoami(
    sshd: SSHServer,
    cert_line: str,
    key: asyncssh.SSHKey,
    known_hosts: str | None = None,
    login: str = "alice",
) -> str:
    """Log in with a key + certificate and return the output of ``whoami``."""
    cert = asyncssh.import_certificate(cert_line)
    async with asyncssh.connect(
        sshd.host,
        sshd.port,
        username=login,
        client_keys=[(key, cert)],
        known_hosts=asyncssh.import_known_hosts(known_hosts or sshd.known_hosts_line),
        agent_path=None,
        connect_timeout=10,
    ) as conn:
        result = await conn.run("whoami", check=True, timeout=10)
        return str(result.stdout).strip()


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def public_line(key: asyncssh.SSHKey) -> str:
    return bytes(key.export_public_key()).decode()


async def test_ssh_login_with_certificate(sshd: SSHServer) -> None:
    key = new_key()
    cert = sshd.sign_user_key(public_line(key), "alice", validity="-1m:+5m")
    assert await ssh_whoami(sshd, cert, key) == "alice"


async def test_ssh_expired_certificate_refused(sshd: SSHServer) -> None:
    key = new_key()
    cert = sshd.sign_user_key(public_line(key), "alice", validity="-10m:-5m")
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh_whoami(sshd, cert, key)


async def test_ssh_wrong_principal_refused(sshd: SSHServer) -> None:
    key = new_key()
    cert = sshd.sign_user_key(public_line(key), "bob")
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh_whoami(sshd, cert, key, login="alice")


async def test_ssh_foreign_ca_refused(sshd: SSHServer) -> None:
    key, foreign_ca = new_key(), new_key()
    cert = foreign_ca.generate_user_certificate(
        key, "foreign", principals=["alice"], valid_after="-1m", valid_before="+5m"
    )
    line = bytes(cert.export_certificate()).decode()
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh_whoami(sshd, line, key)


async def test_ssh_wrong_host_key_refused(sshd: SSHServer) -> None:
    key = new_key()
    cert = sshd.sign_user_key(public_line(key), "alice")
    impostor = public_line(new_key()).split()
    wrong = f"[{sshd.host}]:{sshd.port} {impostor[0]} {impostor[1]}"
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await ssh_whoami(sshd, cert, key, known_hosts=wrong)


def test_ssh_ca_private_key_is_private(sshd: SSHServer) -> None:
    assert sshd.ca_private_key_path.stat().st_mode & 0o777 == 0o600
    assert sshd.ca_public_key.startswith("ssh-ed25519 ")


# -- Traefik ------------------------------------------------------------------------------


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``echo <path>``."""

    def do_GET(self) -> None:
        body = f"echo {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def backend() -> Iterator[str]:
    """A tiny local HTTP server; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return int(resp.status), resp.read().decode()


def test_traefik_ping(traefik: Traefik) -> None:
    assert http_get(traefik.ping_url)[0] == 200


def test_traefik_file_provider_route(traefik: Traefik, backend: str) -> None:
    assert traefik.dynamic_dir is not None
    route = traefik.dynamic_dir / "echo.yaml"
    route.write_text(
        yaml.safe_dump(
            {
                "http": {
                    "routers": {
                        "echo": {
                            "rule": "PathPrefix(`/echo-file`)",
                            "service": "echo",
                            "entryPoints": ["web"],
                        }
                    },
                    "services": {"echo": {"loadBalancer": {"servers": [{"url": backend}]}}},
                }
            }
        )
    )
    try:
        wait_until(
            lambda: http_get(f"{traefik.url}/echo-file/x") == (200, "echo /echo-file/x"),
            timeout=15,
            what="file-provider route",
        )
    finally:
        route.unlink(missing_ok=True)


def test_traefik_redis_provider_route(traefik: Traefik, redis: Redis, backend: str) -> None:
    client = redis_py.Redis.from_url(redis.url)
    keys = {
        "traefik/http/routers/echo-redis/rule": "PathPrefix(`/echo-redis`)",
        "traefik/http/routers/echo-redis/service": "echo-redis",
        "traefik/http/routers/echo-redis/entryPoints/0": "web",
        "traefik/http/services/echo-redis/loadBalancer/servers/0/url": backend,
    }
    client.mset(keys)
    try:
        wait_until(
            lambda: http_get(f"{traefik.url}/echo-redis/y") == (200, "echo /echo-redis/y"),
            timeout=15,
            what="redis-provider route",
        )
    finally:
        client.delete(*keys)
        client.close()


# -- strays ---------------------------------------------------------------------------------


def test_stop_strays_ends_only_processes_with_every_entry() -> None:
    """A daemon's child in a session of its own (like JupyterHub's idle culler) is found by
    its environment and stopped; a process with only one of the entries is left alone."""
    import os
    import subprocess
    import sys

    from hpchub_stack.process import stop_strays

    tag = f"HPCHUB_TEST_STRAY={os.getpid()}"
    base = {**os.environ, "HPCHUB_TEST_STRAY": str(os.getpid())}
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    stray = subprocess.Popen(sleep, env={**base, "HPCHUB_TEST_ROLE": "service"},
                             start_new_session=True)
    other = subprocess.Popen(sleep, env={**base, "HPCHUB_TEST_ROLE": "server"},
                             start_new_session=True)
    try:
        found = stop_strays(tag, "HPCHUB_TEST_ROLE=service", grace=5)
        assert found == [stray.pid]
        assert stray.wait(timeout=10) != 0
        assert other.poll() is None
    finally:
        for proc in (stray, other):
            proc.kill()
            proc.wait()
