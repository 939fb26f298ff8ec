"""``GET /``: the status page, rendered by a real headless Chromium (the system package) against the
real server. The DOM is checked and a screenshot is kept in ``tests/artifacts/status-page.png``."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from chessstats import __version__
from chessstats.api.status import render
from tests.conftest import ROOT, Server, imported
from tests.replay import ReplayUpstream

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
TEAM_BATTLE = "sH24g2zH"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium: install the system package (apt-get install -y chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120)


class Texts(HTMLParser):
    """The text of each element with an id, and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.links: list[str] = []
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag in ("meta", "link", "br", "img", "input"):
            return
        self._open.append(a.get("id"))
        if a.get("id"):
            self.by_id[a["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("meta", "link", "br", "img", "input"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for name in self._open:
            if name:
                self.by_id[name] += data


@needs_chromium
def test_status_page_in_headless_chromium(start_server, upstream: ReplayUpstream, tmp_path: Path) -> None:
    server: Server = start_server("--access-log")  # background jobs on
    assert server.client.get(f"/api/tournaments/{TEAM_BATTLE}").status_code == 200
    imported(server, TEAM_BATTLE)
    for _ in range(3):
        assert server.client.get(f"/api/tournaments/{TEAM_BATTLE}").json()["cached"] is True
    assert server.admin("POST", "/api/admin/jobs/cleanup/run").status_code == 202
    deadline = time.monotonic() + 20
    while "cleanup" not in str(server.admin("GET", "/api/admin/jobs").json()["data"]["completed"]):
        assert time.monotonic() < deadline, "the cleanup run did not complete"
        time.sleep(0.2)

    done = chromium(tmp_path, "--dump-dom", server.url + "/")
    assert done.returncode == 0, done.stderr[-2000:]
    page = Texts()
    page.feed(done.stdout)
    text = page.by_id
    assert text["overall"].strip() == "ok"
    assert __version__ in text["version"] and re.search(r"up \d+", text["uptime"])
    for part in ("database", "storage", "cache", "lichess", "fide", "scheduler"):
        assert part in text["health"], part
    assert re.fullmatch(r"\s*\d+\.\d %\s*", text["hit-rate"]), text["hit-rate"]
    assert "cleanup" in text["jobs"] and "completed" in text["jobs"]
    assert re.search(r"tournament-monitor.{0,40}?\d{4}-\d\d-\d\dT", text["jobs"]), text["jobs"]  # a next run
    lichess_row = re.search(r"lichess\s*(\d+)\s*(\d+)\s*(\d+)", text["upstreams"])
    assert lichess_row and int(lichess_row.group(1)) >= 3, text["upstreams"]  # info, results, games
    assert all(link.startswith("/") for link in page.links), page.links  # no external asset

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars",
                    server.url + "/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    shutil.copy(shot, tmp_path / "status-page.png")


def test_status_page_renders_whatever_the_report_holds() -> None:
    page = render({"status": "error", "checks": {"database": {"status": "error", "error": "<b>x</b>"}}}, None, None)
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page  # escaped
    assert "jobs unavailable" in page and 'class="badge error"' in page


def test_status_page_answers_html_with_no_external_asset(server: Server) -> None:
    resp = server.client.get("/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert not re.search(r'(?:src|href)="(?:https?:)?//', resp.text)
    assert server.client.head("/").status_code == 200
