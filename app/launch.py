"""Start the Streamlit server on the app file with a given index and collection (``mvk app``, ``mvk demo``)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from search.errors import InputError

APP_FILE = Path(__file__).resolve().parent / "streamlit_app.py"

# Server options: local by default, no telemetry, no file watcher (the app's files do not change under it),
# uploads capped at the size app.security accepts.
SERVER_OPTIONS = {
    "server.fileWatcherType": "none",
    "server.maxUploadSize": "20",
    "browser.gatherUsageStats": "false",
    "global.developmentMode": "false",
    "client.toolbarMode": "viewer",
    "theme.base": "light",
    "theme.primaryColor": "#0a6e8a",
}


def check_folders(index: str | Path, collection: str | Path | None) -> tuple[Path, Path | None]:
    """Resolved folders; InputError naming the one that is not a folder. A missing index folder is created
    (the Index page can build into it); a missing collection is an error."""
    index_path = Path(index).expanduser().resolve()
    if index_path.exists() and not index_path.is_dir():
        raise InputError(f"{index}: the index must be a folder")
    index_path.mkdir(parents=True, exist_ok=True)
    collection_path = None
    if collection is not None:
        collection_path = Path(collection).expanduser().resolve()
        if not collection_path.is_dir():
            raise InputError(f"{collection}: the collection is not a folder")
    return index_path, collection_path


def streamlit_command(index: Path, collection: Path | None, *, port: int = 8501, host: str = "127.0.0.1",
                      headless: bool = False, random_weights: bool = False, device: str = "cpu",
                      demo: bool = False) -> list[str]:
    """The argument list of ``python -m streamlit run`` (a list: nothing goes through a shell)."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_FILE),
           "--server.port", str(int(port)), "--server.address", host,
           "--server.headless", "true" if headless else "false"]
    for key, value in SERVER_OPTIONS.items():
        cmd += [f"--{key}", value]
    cmd += ["--", "--index", str(index), "--device", device]
    if collection is not None:
        cmd += ["--collection", str(collection)]
    if random_weights:
        cmd.append("--random-weights")
    if demo:
        cmd.append("--demo")
    return cmd


def run_streamlit(cmd: list[str]) -> int:
    """Run the server in the foreground until it stops (Ctrl-C); its exit code."""
    env = dict(os.environ)
    repo_root = str(APP_FILE.parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0
