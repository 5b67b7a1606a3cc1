"""`hpchub demo` (README's first command) as a newcomer uses it: start it, open the printed
portal in headless Chromium, log in with the printed demo credentials, spawn JupyterLab on
the local Slurm, then Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .test_hub_e2e import chromium

READY_LINE = "Press Ctrl-C to stop everything."


def _wait_for_banner(log: Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if READY_LINE in text:
            return text
        assert proc.poll() is None, f"hpchub demo exited with {proc.returncode}:\n{text}"
        time.sleep(0.5)
    raise AssertionError(f"hpchub demo not ready after {timeout}s:\n{log.read_text()}")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_demo_brings_up_a_working_portal(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    began = time.monotonic()
    with open(log, "wb") as out:
        # Started with SIGINT ignored, as a background job of a non-interactive shell is
        # (CI may run the suite that way): Ctrl-C must still stop the demo.
        proc = subprocess.Popen([sys.executable, "-m", "hpchub_operator.cli", "demo"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                preexec_fn=_ignore_sigint)
    try:
        banner = _wait_for_banner(log, proc, timeout=300)
        started = time.monotonic() - began
        print(f"hpchub demo ready in {started:.1f}s")
        portal = re.search(r"Portal:\s+(\S+)", banner)
        cred = re.search(r"^\s+(alice)\s+(\S+)", banner, re.MULTILINE)
        assert portal and cred, banner
        _spawn_in_browser(portal.group(1).rstrip("/"), cred.group(1), cred.group(2), tmp_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                raise
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text
    assert text.rstrip().endswith("stopped."), text[-2000:]


def _spawn_in_browser(portal: str, login: str, password: str, tmp_path: Path) -> None:
    base = portal.removesuffix("/hub")
    driver = chromium(tmp_path)
    try:
        driver.get(f"{base}/hub/login")
        driver.find_element(By.ID, "username_input").send_keys(login)
        driver.find_element(By.ID, "password_input").send_keys(password)
        driver.find_element(By.ID, "login_submit").click()
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: "/hub/spawn" in d.current_url or "/hub/home" in d.current_url)
        driver.get(f"{base}/hub/spawn")
        wait.until(lambda d: d.find_elements(By.ID, "hpchub-account"))
        start = driver.find_element(
            By.CSS_SELECTOR, "form input[type=submit], form button[type=submit]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", start)
        start.click()
        WebDriverWait(driver, 240).until(
            lambda d: f"/user/{login}/lab" in d.current_url
            and d.find_elements(By.ID, "jp-main-dock-panel"))
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Launcher, .jp-LauncherCard"))
        artifacts = Path(__file__).resolve().parents[2] / "artifacts"
        artifacts.mkdir(exist_ok=True)
        driver.save_screenshot(str(artifacts / "demo-jupyterlab.png"))
    finally:
        driver.quit()
