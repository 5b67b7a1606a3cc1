"""``hpchub-launch``: start a Jupyter server on this node and report its port to the operator.

Steps: pick a free port, start the app in its own process group, wait until it answers
HTTP locally, POST ``{"port": N}`` to the operator, then wait for the app and exit with its
status. When the app cannot start, POST ``{"failure": "..."}`` instead. SIGTERM, SIGINT and
SIGHUP stop the app (SIGTERM to its group, SIGKILL after a grace period).

With HPCHUB_ISOLATION=required or optional, the app runs in a private network namespace and
the reported port is the one forwarded to it from the node (isolation.py, sandbox.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

from .app import (
    App,
    LaunchError,
    app_environment,
    become_subreaper,
    build_command,
    can_bind,
    executable_name,
    exit_status,
    find_executable,
    listener_is_ours,
    pick_port,
    port_clash,
    stop_leftovers,
)
from .config import Callback, ConfigError, LaunchConfig, read_callback, read_config
from .isolation import SANDBOX_BIND_IP, Tools, decide, inner_port, unisolated_warning
from .report import failure_text, send_report, wait_until_up
from .sandbox import Network, node_support, start_sandboxed

log = logging.getLogger("hpchub-launch")

EXIT_CONFIG = 2
EXIT_REPORT = 3
EXIT_START = 4
# A port can be taken between our check and the app's bind; that many starts at most.
_START_ATTEMPTS = 3
# How long the job-started hint is retried: after that the operator's poll is as quick.
STARTED_PATIENCE = 5.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

ENVIRONMENT_HELP = """\
environment:
  HPCHUB_SERVER_UID      uid of the JupyterServer (required)
  HPCHUB_CALLBACK_URL    operator callback base URL, e.g. http://10.0.0.5:8081 (required)
  HPCHUB_CALLBACK_TOKEN  bearer token for the report (required; not passed to the app)
  HPCHUB_APP             jupyterlab | notebook (default jupyterlab)
  HPCHUB_PORT_MIN/MAX    port range to pick from (default 20000-60000); ports of the
                         kernel's ephemeral range are used only if the range has no other
  HPCHUB_BIND_IP         address the app listens on (default 0.0.0.0)
  HPCHUB_BASE_URL        base URL path (default /, or $JUPYTERHUB_SERVICE_PREFIX in hub mode)
  HPCHUB_START_TIMEOUT   seconds to wait for the app to answer (default 300)
  HPCHUB_STOP_GRACE      seconds between SIGTERM and SIGKILL of the app (default 5)
  HPCHUB_WORKDIR         working directory; may start with ~, $HOME, $WORK, $SCRATCH, $STORE
  HPCHUB_ISOLATION       off | required | optional (default off): run the app in a private
                         network namespace (bwrap + slirp4netns) with only its port forwarded
  JUPYTERHUB_API_TOKEN   set: hub mode (jupyterhub-singleuser); unset: standalone mode
  JUPYTER_TOKEN          the server's token in standalone mode (required there)

exit status: the app's (128+N when killed by signal N); 2 bad configuration;
3 the operator refused or never took the report; 4 the app did not start.
"""


class Launcher:
    """One launch: the app, and whether (and until when) we are stopping it."""

    def __init__(self, callback: Callback, config: LaunchConfig, env: Mapping[str, str]) -> None:
        """Remember the settings; nothing starts until :meth:`run`."""
        self.callback = callback
        self.config = config
        self.env = env
        self.app: App | None = None
        self.network: Network | None = None
        self.stop_deadline: float | None = None
        self.signalled = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """A stop signal: SIGTERM the app's group (never SIGINT: the hub's app ignores one)."""
        log.info("received %s, stopping the app", signal.Signals(signum).name)
        self.signalled = True
        self.request_stop()

    def request_stop(self) -> None:
        """Send SIGTERM to the app's group and start the grace period (once)."""
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + self.config.stop_grace
        if self.app is not None:
            self.app.signal_group(signal.SIGTERM)

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self.stop_deadline is not None

    def run(self) -> int:
        """Start, wait for readiness, report, and wait for the app; return the exit status."""
        name = executable_name(self.config)
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                port = self.start(name)
            except LaunchError as exc:
                return self.fail(str(exc), exc.stderr_lines)
            if self.stopping:
                self.request_stop()
            up = self.wait_until_up(port)
            if self.stopping:
                return self.finish()
            # What answered may be another program that took the port first (another
            # server starting on this node): only a listener of ours counts.
            stolen = up and not self.listens(port)
            if up and not stolen:
                break
            if attempt == _START_ATTEMPTS or not (stolen or self.lost_port(port)):
                return self.fail_start(name, port)
            log.warning("port %d was taken before %s listened on it, trying another", port, name)
            self.abandon()
        log.info("%s answers on port %d, reporting", name, port)
        accepted = send_report(self.callback, {"port": port}, keep_going=lambda: not self.signalled)
        if accepted or self.signalled:
            return self.finish()
        self.request_stop()
        self.finish()
        return EXIT_REPORT

    def wait_until_up(self, port: int) -> bool:
        """True once the app answers on ``port``; False if it exits, never answers, or we stop."""
        app = self.app
        assert app is not None
        return wait_until_up(
            f"http://{probe_host(self.config.bind_ip)}:{port}{self.config.base_url}api",
            self.config.start_timeout,
            keep_going=lambda: app.proc.poll() is None and not self.stopping and self.online(),
        )

    def listens(self, port: int) -> bool:
        """True when the socket listening on ``port`` belongs to the app (or /proc cannot
        tell); in a sandbox the forwarded port is held by our slirp4netns."""
        assert self.app is not None
        return self.network is not None or listener_is_ours(port, self.app.pgid)

    def abandon(self) -> None:
        """Drop a start that lost its port: kill what is left of the app, clean up."""
        assert self.app is not None
        self.app.signal_group(signal.SIGKILL)
        self.app.wait(5.0)
        self.cleanup()

    def lost_port(self, port: int) -> bool:
        """True when the app exited because something else holds ``port`` now (it says so,
        or the port cannot be bound any more): starting again on another port may work."""
        assert self.app is not None
        if self.app.proc.poll() is not None and self.network is None:  # a sandbox has no rivals
            return not can_bind(self.config.bind_ip, port) or port_clash(
                port, self.app.stderr_tail()
            )
        return False

    def start(self, name: str) -> int:
        """Start the app, isolated when the cluster asks for it; return the port to report."""
        executable = find_executable(name)
        mode = self.config.isolation
        decision = decide(mode, node_support(self.env.get("PATH")), self.config.bind_ip)
        if decision.failure is not None:
            raise LaunchError(decision.failure)
        if decision.warning is not None:
            log.warning("%s", decision.warning)
        if decision.tools is not None:
            try:
                return self.start_isolated(name, executable, decision.tools)
            except LaunchError as exc:
                if mode == "required":
                    reason = f"network isolation failed: {exc}"
                    raise LaunchError(reason, exc.stderr_lines) from None
                log.warning("%s", unisolated_warning(str(exc)))
        port = self.pick_port()
        log.info("starting %s on %s:%d", name, self.config.bind_ip, port)
        argv = build_command(self.config, port, executable)
        self.app = App(argv, app_environment(self.config, self.env, port), self.config.workdir)
        return port

    def start_isolated(self, name: str, executable: str, tools: Tools) -> int:
        """Start the app in the sandbox; return the port forwarded to it from the node."""
        config = self.config
        inside = dataclasses.replace(config, bind_ip=SANDBOX_BIND_IP)
        first = self.pick_port()
        pick = random.SystemRandom().getrandbits(32)
        guest_port = inner_port(first, config.port_min, config.port_max, pick)
        host_ports = itertools.chain([first], iter(self.pick_port, None))
        self.app, self.network, port = start_sandboxed(
            tools,
            build_command(inside, guest_port, executable),
            app_environment(inside, self.env, guest_port),
            config.workdir,
            config.bind_ip,
            guest_port,
            lambda: next(host_ports),
        )
        log.info(
            "starting %s isolated: port %d inside the sandbox, forwarded from %s:%d",
            name,
            guest_port,
            config.bind_ip,
            port,
        )
        return port

    def online(self) -> bool:
        """False once the sandbox's network helper has died (nothing can reach the app)."""
        return self.network is None or self.network.alive()

    def pick_port(self) -> int:
        """A free port of the configured range on the node's bind address."""
        return pick_port(self.config.bind_ip, self.config.port_min, self.config.port_max)

    def fail_start(self, name: str, port: int) -> int:
        """The app exited early or never answered: stop it and report why."""
        assert self.app is not None
        code = self.app.proc.poll()
        if code is None:
            reason = (
                f"{name} did not answer on port {port} within {self.config.start_timeout:.0f} s"
            )
            self.request_stop()
            self.finish()
        else:
            self.cleanup()
            reason = f"{name} exited with status {exit_status(code)} before answering"
        return self.fail(reason, self.app.stderr_tail())

    def fail(self, reason: str, stderr_lines: list[str]) -> int:
        """Log and report a failure to start; the exit status says which report happened."""
        log.error("%s", reason)
        sent = send_report(
            self.callback,
            {"failure": failure_text(reason, stderr_lines)},
            keep_going=lambda: not self.signalled,
        )
        return EXIT_START if sent else EXIT_REPORT

    def finish(self) -> int:
        """Wait for the app to exit (SIGKILL once the grace is over), clean up its leftovers."""
        assert self.app is not None
        while (code := self.app.wait(0.2)) is None:
            if not self.online() and not self.stopping:
                log.error("slirp4netns exited: the server is unreachable, stopping it")
                self.request_stop()
            if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                log.warning("the app outlived its %.0f s grace, killing it", self.config.stop_grace)
                self.app.signal_group(signal.SIGKILL)
                self.stop_deadline = math.inf
        log.info("the app exited with status %d", exit_status(code))
        self.cleanup()
        return exit_status(code)

    def cleanup(self) -> None:
        """Once the app is gone: stop slirp4netns, then every leftover process of ours."""
        assert self.app is not None
        if self.network is not None:
            self.network.stop()
        stop_leftovers(self.app.pgid, self.config.stop_grace)


def probe_host(bind_ip: str) -> str:
    """Where to reach the app from this node: loopback for wildcard binds."""
    if bind_ip in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind_ip == "::":
        return "[::1]"
    return f"[{bind_ip}]" if ":" in bind_ip else bind_ip


def launch(env: Mapping[str, str]) -> int:
    """Read the configuration from ``env`` and run one launch; return the exit status."""
    try:
        callback = read_callback(env)
    except ConfigError as exc:
        log.error("cannot report anything: %s", exc)
        return EXIT_CONFIG
    try:
        config = read_config(env)
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        send_report(callback, {"failure": failure_text(f"launcher configuration: {exc}", [])})
        return EXIT_CONFIG
    launcher = Launcher(callback, config, env)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, launcher.on_signal)
    become_subreaper()
    return launcher.run()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpchub-launch`` console script."""
    parser = argparse.ArgumentParser(
        prog="hpchub-launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=ENVIRONMENT_HELP,
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--report-failure",
        metavar="REASON",
        help="only report that the server cannot start, for REASON (used by the job script "
        "when the environment cannot be set up), and exit with status 4",
    )
    only.add_argument(
        "--report-started",
        action="store_true",
        help="only tell the operator that the job has started (the job script does this "
        "first, in the background, while modules and conda load), and exit",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s hpchub-launch %(levelname)s %(message)s",
    )
    if args.report_failure is not None:
        return report_failure(os.environ, args.report_failure)
    if args.report_started:
        return report_started(os.environ)
    return launch(os.environ)


def report_started(env: Mapping[str, str]) -> int:
    """Send the job-started hint: the operator reads Slurm at once instead of at its next
    poll (a hint only; Slurm stays the authority). 0 when accepted, else EXIT_REPORT."""
    try:
        callback = read_callback(env)
    except ConfigError as exc:
        log.error("cannot report anything: %s", exc)
        return EXIT_CONFIG
    return 0 if send_report(callback, {"started": True}, STARTED_PATIENCE) else EXIT_REPORT


def report_failure(env: Mapping[str, str], reason: str) -> int:
    """Send a failure report without starting anything."""
    try:
        callback = read_callback(env)
    except ConfigError as exc:
        log.error("cannot report anything: %s", exc)
        return EXIT_CONFIG
    log.error("%s", reason)
    sent = send_report(callback, {"failure": failure_text(reason, [])})
    return EXIT_START if sent else EXIT_REPORT




if __name__ == "__main__":
    raise SystemExit(main())
