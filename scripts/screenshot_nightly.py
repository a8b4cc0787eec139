"""Make docs/nightly-artifacts.png: the Artifacts tab of a nightly run in the Prefect UI.

Starts a throwaway Prefect server (as scripts/screenshot_deployments.py does), then, in a
temporary project folder: imports most accounts of the bundled sample, refreshes, imports the
whole sample and runs the nightly flow once (no sources file: its crawl is skipped), so the
night's artifacts show clusters, what changed and the report. Photographs the nightly run's
Artifacts tab in headless Chromium (driven over the DevTools protocol: the tab must be clicked,
the UI ignores `?tab=` while the run loads) and stops everything.
Usage: python scripts/screenshot_nightly.py
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import polars as pl
from screenshot_deployments import CHROMIUM_FLAGS, ROOT, free_port  # puts ROOT on sys.path
from websockets.sync.client import connect

from flows import serve  # noqa: E402 - after the project root is importable

OUT = ROOT / "docs" / "nightly-artifacts.png"
SAMPLE = ROOT / "data" / "sample" / "fb_pages_sample.parquet"
LATE_SHARE = 0.15  # the sample's accounts that join only before the night's run


def run(folder: Path, env: dict[str, str], *command: str) -> None:
    """Run a Python command in the project folder; fail with its output."""
    done = subprocess.run(
        [sys.executable, *command], cwd=folder, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def split_sample(folder: Path) -> tuple[Path, Path]:
    """The sample without its last LATE_SHARE accounts, and the whole sample."""
    posts = pl.read_parquet(SAMPLE)
    users = posts["user_id"].unique().sort()
    early = users.head(int(len(users) * (1 - LATE_SHARE)))
    path = folder / "early.parquet"
    posts.filter(pl.col("user_id").is_in(early.to_list())).write_parquet(path)
    return path, SAMPLE


def nightly_run_id(api_url: str) -> str:
    """The id of the (one) nightly flow run."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with SyncPrefectClient(api_url) as client:
        nights = FlowFilter(name=FlowFilterName(any_=["nightly"]))
        [night] = client.read_flow_runs(flow_filter=nights)
        return str(night.id)


def night(folder: Path, env: dict[str, str]) -> None:
    """A first refresh on most of the sample, then the night with all of it."""
    early, whole = split_sample(folder)
    tribes = ("-m", "flows.cli", "--no-progress")
    imported = ("--platform", "facebook", "--label-col", "user_label")
    run(folder, env, *tribes, "import", str(early), *imported)
    run(folder, env, *tribes, "refresh")
    run(folder, env, *tribes, "import", str(whole), *imported)
    run(folder, env, "-c", "from flows.nightly import nightly; nightly()")


CLICK_ARTIFACTS = """(() => {
  const tab = [...document.querySelectorAll('button, [role=tab], li, a')]
    .find(e => e.textContent.trim() === 'Artifacts');
  if (tab) tab.click();
  return Boolean(tab);
})()"""


class DevTools:
    """One page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, port: int) -> None:
        targets = json.load(urllib.request.urlopen(f"http://{serve.HOST}:{port}/json"))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while (reply := json.loads(self.socket.recv())).get("id") != self.next_id:
            pass  # events
        return reply.get("result", {})

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression)["result"].get("value")


def wait_for(check, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def photograph_artifacts(chromium: str, url: str, profile: Path) -> None:
    """Open the run page, click its Artifacts tab, save the page as OUT."""
    port = free_port()
    flags = [f for f in CHROMIUM_FLAGS if not f.startswith("--virtual-time-budget")]
    browser = subprocess.Popen(
        [chromium, *flags, f"--user-data-dir={profile}", f"--remote-debugging-port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: not serve.port_free(port), "Chromium's DevTools port")
        time.sleep(1)  # its page target appears just after the port opens
        page = DevTools(port)
        page.call(  # tall enough for the graph, the tabs and the artifact cards
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=1150,
            deviceScaleFactor=1,
            mobile=False,
        )
        page.call("Page.navigate", url=url)
        wait_for(lambda: page.evaluate(CLICK_ARTIFACTS), "the Artifacts tab")
        wait_for(
            lambda: page.evaluate("document.body.innerText.includes('tribes-changes')"),
            "the artifacts",
        )
        time.sleep(2)  # let the cards finish rendering
        shot = page.call("Page.captureScreenshot", format="png")["data"]
        OUT.write_bytes(base64.b64decode(shot))
    finally:
        browser.terminate()
        browser.wait(10)


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: apt-get install -y chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        home, port, project = Path(tmp) / "prefect", free_port(), Path(tmp) / "project"
        home.mkdir()
        project.mkdir()
        env = serve.prefect_env(home, port, {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
        env = {k: v for k, v in env.items() if not k.startswith("TRIBES_")}
        with (home / "server.log").open("w") as log:
            server = serve.start_server(env, port, log)
            try:
                serve.wait_healthy(env["PREFECT_API_URL"], server)
                night(project, env)
                run_id = nightly_run_id(env["PREFECT_API_URL"])
                url = f"http://{serve.HOST}:{port}/runs/flow-run/{run_id}"
                photograph_artifacts(chromium, url, Path(tmp) / "chromium")
            finally:
                serve.stop(server)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
