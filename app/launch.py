"""Start the Streamlit server on the app file with a given index and collection (``mvk app``, ``mvk demo``).

The server always runs headless: Streamlit's own browser opening comes with a first-run prompt ("Welcome to
Streamlit! ... Email:") that waits on the terminal, so the port would not answer until someone pressed Enter.
The launcher opens the browser itself once the server answers, and forwards SIGTERM, SIGHUP and Ctrl-C to the
server, so stopping ``mvk app`` stops the server too.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import webbrowser
from collections.abc import Callable
from pathlib import Path

from search.errors import InputError

APP_FILE = Path(__file__).resolve().parent / "streamlit_app.py"

# Server options: headless (no prompt, no browser opened by Streamlit), local by default, no telemetry, no file
# watcher (the app's files do not change under it), uploads capped at the size app.security accepts.
SERVER_OPTIONS = {
    "server.headless": "true",
    "server.fileWatcherType": "none",
    "server.maxUploadSize": "20",
    "browser.gatherUsageStats": "false",
    "global.developmentMode": "false",
    # the search page sets its page number through Session State on purpose (a new query starts on page 1);
    # Streamlit would log that, with a 30-line stack, on the first search of every start
    "global.disableWidgetStateDuplicationWarning": "true",
    "client.toolbarMode": "viewer",
    "theme.base": "light",
    "theme.primaryColor": "#0a6e8a",
}
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
STOP_GRACE_S = 5.0           # seconds the server gets to stop after SIGTERM before it is killed (it needs 1-4)


def check_folders(index: str | Path, collection: str | Path | None, *,
                  create: bool = False) -> tuple[Path, Path | None]:
    """Resolved folders; InputError naming the one that is not a folder. A missing index folder is created
    only when ``create`` is set (``mvk app --new-index``: the Index page can build into it); otherwise it is
    refused, naming the closest existing folder beside it, since a typo would start the app on nothing."""
    index_path = Path(index).expanduser().resolve()
    if index_path.exists() and not index_path.is_dir():
        raise InputError(f"{index}: the index must be a folder")
    if not index_path.exists() and not create:
        near = closest_folder(index_path)
        raise InputError(f"no index folder at {index}" + (f" (did you mean {near}?)" if near else "")
                         + "; to start with an empty index and build it from the Index page, pass --new-index")
    collection_path = None
    if collection is not None:
        collection_path = Path(collection).expanduser().resolve()
        if not collection_path.is_dir():
            raise InputError(f"{collection}: the collection is not a folder")
    index_path.mkdir(parents=True, exist_ok=True)
    return index_path, collection_path


def closest_folder(path: Path) -> Path | None:
    """The existing folder beside ``path`` whose name is closest to its name (a likely typo), or None."""
    import difflib

    parent = path.parent
    if not parent.is_dir():
        return None
    try:
        names = [p.name for p in parent.iterdir() if p.is_dir()]
    except OSError:
        return None
    found = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return parent / found[0] if found else None


def check_port(host: str, port: int) -> None:
    """InputError when ``port`` on ``host`` cannot be served (another server holds it), suggesting ``--port``."""
    if not 0 < port < 65536:
        raise InputError(f"--port {port}: a port is a number from 1 to 65535")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server binds: TIME_WAIT is no obstacle
            s.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {host} is already in use (another mvk app or server?): "
                             f"stop it, or pass --port {_suggest_port(host, port)}") from None
        raise InputError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def _suggest_port(host: str, port: int) -> int:
    """The first free port after ``port`` (or ``port + 1`` when none of the next few is free)."""
    for candidate in range(port + 1, min(port + 20, 65535)):
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                s.bind((host, candidate))
            return candidate
        except OSError:
            continue
    return port + 1


def app_url(host: str, port: int) -> str:
    """The address a browser on this machine opens for a server listening on ``host``."""
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "::1", "localhost") else host
    return f"http://{shown}:{int(port)}"


def streamlit_command(index: Path, collection: Path | None, *, port: int = 8501, host: str = "127.0.0.1",
                      random_weights: bool = False, device: str = "cpu", demo: bool = False,
                      clip_checkpoint: Path | None = None) -> list[str]:
    """The argument list of ``python -m streamlit run`` (a list: nothing goes through a shell)."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_FILE),
           "--server.port", str(int(port)), "--server.address", host]
    for key, value in SERVER_OPTIONS.items():
        cmd += [f"--{key}", value]
    cmd += ["--", "--index", str(index), "--device", device]
    if collection is not None:
        cmd += ["--collection", str(collection)]
    if random_weights:
        cmd.append("--random-weights")
    if clip_checkpoint is not None:
        cmd += ["--clip-checkpoint", str(Path(clip_checkpoint).expanduser().resolve())]
    if demo:
        cmd.append("--demo")
    return cmd


def can_open_browser(environ: dict[str, str] | os._Environ = os.environ, platform: str = sys.platform) -> bool:
    """Whether opening a browser makes sense: $BROWSER is set, or a desktop is there (macOS, Windows, an X or
    Wayland display). Without one Python's webbrowser would start a console browser in this terminal."""
    if environ.get("BROWSER"):
        return True
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def wait_until_serving(url: str, alive: Callable[[], bool], *, timeout: float = 120.0, every: float = 0.3) -> bool:
    """True once ``url``'s health check answers; False when ``alive()`` turns false or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(every)
    return False


def _announce(url: str, proc: subprocess.Popen, open_browser: bool) -> None:
    """Once the server answers: say where it is and open the browser (when there is one to open)."""
    if not wait_until_serving(url, lambda: proc.poll() is None):
        return
    print(f"mvk: the app is ready at {url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    if open_browser and can_open_browser():
        try:
            webbrowser.open(url)
        except webbrowser.Error as exc:
            print(f"mvk: could not open a browser ({exc}): open {url} yourself", file=sys.stderr, flush=True)


def run_streamlit(cmd: list[str], *, url: str, open_browser: bool = True) -> int:
    """Run the server until it stops or this process is told to stop (SIGTERM, SIGHUP, Ctrl-C: passed on to
    the server, which is killed if it does not stop within STOP_GRACE_S). Returns the server's exit code, 0
    when it was stopped on request."""
    env = dict(os.environ)
    repo_root = str(APP_FILE.parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
    stopped_at: list[float] = []
    proc = subprocess.Popen(cmd, env=env)

    def stop(signum: int, _frame: object) -> None:
        if proc.poll() is not None:
            return
        if stopped_at:                  # asked twice: no more waiting
            proc.kill()
            return
        stopped_at.append(time.monotonic())
        print(f"\nmvk: stopping the app server (at most {STOP_GRACE_S:.0f} s; Ctrl-C again stops it at once)",
              file=sys.stderr, flush=True)
        proc.send_signal(signal.SIGTERM)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        threading.Thread(target=_announce, args=(url, proc, open_browser), name="mvk-open-browser",
                         daemon=True).start()
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopped_at and time.monotonic() - stopped_at[0] > STOP_GRACE_S:
                    proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopped_at else code
