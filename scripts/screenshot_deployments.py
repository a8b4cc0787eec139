"""Make docs/deployments.png: the Prefect UI's deployments page as `make serve` shows it.

Starts a throwaway Prefect server (temporary PREFECT_HOME, free port, analytics off), deploys
prefect.yaml and starts a worker with `flows.serve`'s functions, photographs
http://127.0.0.1:PORT/deployments in Debian's headless Chromium, then stops everything.
Usage: python scripts/screenshot_deployments.py
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows import serve  # noqa: E402 - after the project root is importable

OUT = ROOT / "docs" / "deployments.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,900",
    "--virtual-time-budget=15000",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((serve.HOST, 0))
        return probe.getsockname()[1]


def wait_ready(api_url: str, timeout: float = 120.0) -> None:
    """Wait until the worker has polled, so the page shows the deployments as Ready."""
    from prefect.client.orchestration import SyncPrefectClient

    deadline = time.monotonic() + timeout
    with SyncPrefectClient(api_url) as client:
        while client.read_deployment_by_name("refresh/refresh").status != "READY":
            if time.monotonic() > deadline:
                raise serve.ServeError("the worker never polled the tribes pool")
            time.sleep(1)


def screenshot(chromium: str, url: str, out: Path, profile: Path) -> None:
    """Photograph `url` into `out` with a throwaway Chromium profile."""
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
        check=True,
        timeout=180,
        capture_output=True,
    )


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: apt-get install -y chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        home, port = Path(tmp) / "prefect", free_port()
        home.mkdir()
        env = serve.prefect_env(home, port)
        with (home / "server.log").open("w") as log:
            server = serve.start_server(env, port, log)
            try:
                serve.wait_healthy(env["PREFECT_API_URL"], server)
                serve.create_pool(env)
                serve.deploy_all(env)
                worker = serve.start_worker(env, log)
                try:
                    wait_ready(env["PREFECT_API_URL"])
                    url = f"http://{serve.HOST}:{port}/deployments"
                    screenshot(chromium, url, OUT, Path(tmp) / "chromium")
                finally:
                    serve.stop(worker)
            finally:
                serve.stop(server)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
