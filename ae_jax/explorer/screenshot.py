"""Headless Chromium: where it is, the flags it runs with, and a screenshot of a page."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "apt-get install chromium chromium-driver"
# Headless, no sandbox (containers run as root), nothing that reaches the network.
HEADLESS_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def find_chromium() -> str | None:
    """Path of a Chromium-like browser on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: str | Path, png_path: str | Path, size: tuple[int, int] = (1400, 900),
               timeout_s: float = 120) -> str | None:
    """Open html_path in headless Chromium and save a PNG of the window; None, or why it could not."""
    browser = find_chromium()
    if browser is None:
        return f"no Chromium found (install it with `{INSTALL_HINT}`)"
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ae_jax_chromium_") as profile:
        tmp_png = Path(profile) / "shot.png"
        cmd = [browser, *HEADLESS_FLAGS, f"--user-data-dir={profile}/profile", "--hide-scrollbars",
               f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000", f"--screenshot={tmp_png}",
               Path(html_path).resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{browser} failed: {e}"
        if proc.returncode != 0 or not tmp_png.exists():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return f"{browser} exited with {proc.returncode}: {tail}"
        data = tmp_png.read_bytes()
    from ..io import atomic_write_bytes
    atomic_write_bytes(png_path, data)
    return None

