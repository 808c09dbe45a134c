"""`mvk app` as a person starts it: on a fresh machine (no Streamlit credentials file), no --no-open, stdin
open on the terminal. The port must answer without anyone pressing Enter, the browser is opened by the
launcher, and SIGTERM to `mvk app` stops the server too."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX signals")
def test_mvk_app_serves_without_a_prompt_opens_the_browser_and_stops_the_server_on_sigterm(tmp_path):
    home = tmp_path / "home"                     # a fresh machine: Streamlit has never asked for an email here
    home.mkdir()
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    port = free_port()
    env = {**os.environ, "HOME": str(home), "BROWSER": str(browser),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("DISPLAY", None)
    proc = subprocess.Popen([sys.executable, "-m", "app", "app", "--index", str(tmp_path / "idx"), "--new-index",
                             "--port", str(port)], env=env, cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: answers(port), 90), "the server did not answer (waiting at a prompt?)"
        assert wait_for(opened.exists, 20), "the launcher did not open the browser"
        assert opened.read_text().split() == [f"http://localhost:{port}"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert wait_for(lambda: not answers(port), 15), "the Streamlit server outlived `mvk app`"
        output = proc.stdout.read().decode(errors="replace")
        assert "Email" not in output and f"ready at http://localhost:{port}" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_browser_is_opened_only_where_there_is_one_to_open():
    from app.launch import can_open_browser

    assert not can_open_browser({}, "linux")                      # a server over ssh: no console browser
    assert can_open_browser({"DISPLAY": ":0"}, "linux")
    assert can_open_browser({"BROWSER": "firefox"}, "linux")
    assert can_open_browser({}, "darwin")


STUBBORN = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('serving', flush=True)\n"
            "time.sleep(120)\n")


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX signals")
def test_ctrl_c_says_it_is_stopping_and_a_second_one_stops_at_once(tmp_path):
    """A server slow to stop: the first Ctrl-C says so at once (and how long it may take), the second kills it."""
    launcher = ("import sys\nfrom app.launch import run_streamlit\n"
                f"sys.exit(run_streamlit([sys.executable, '-c', {STUBBORN!r}], url='http://127.0.0.1:9', "
                "open_browser=False))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", launcher], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "serving"
        proc.send_signal(signal.SIGINT)
        line = "\n"
        while line == "\n":                              # the message starts on a line of its own
            line = proc.stdout.readline()
        assert "stopping the app server" in line and "Ctrl-C again" in line, line
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 3.0          # not the grace period: at once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
