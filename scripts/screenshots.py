"""Screenshots of `mlflow ui` for a small sweep, taken with headless Chromium, for docs/images/.

    python scripts/screenshots.py [--out docs/images] [--epochs 30] [--keep]

Runs a 4-job spiral sweep in a temporary folder (nothing is written where you are but the PNGs), starts
`mlflow ui` on a free loopback port, opens the pages a user comparing runs looks at, and saves one PNG
each. Re-runnable: the PNGs are replaced. Needs Chromium (Debian: `apt-get install chromium`, or set
$CHROMIUM) and labnet with MLflow installed in this Python, and selenium (`pip install selenium`) driving Debian's
chromedriver (`apt-get install chromium-driver`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
SWEEP = ["optimizer=sgd,adam", "optimizer.lr=0.01,0.1"]
WINDOW = "1440,1500"  # (tall enough for a sweep run's description)
LOAD_SECONDS = 180  # the longest a page may take to show what it is for (a busy machine is slow)
SETTLE_SECONDS = 4  # then charts draw
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("screenshots: no Chromium found; install it (Debian: apt-get install chromium) or set $CHROMIUM")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sweep(folder: Path, epochs: int) -> None:
    env = {**os.environ, "LABNET_SYNC": "wait", "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "labnet", "-m", f"trainer.epochs={epochs}", *SWEEP]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"screenshots: the sweep failed:\n{proc.stderr[-3000:]}")
    print("\n".join(proc.stdout.strip().splitlines()[-2:]))


def start_ui(folder: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    ui = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300  # (its first start imports a lot: minutes on a busy machine)
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return ui
        except OSError:
            time.sleep(0.5)
    stop(ui)
    sys.exit("screenshots: mlflow ui did not answer within 300 s")


def stop(ui: subprocess.Popen) -> None:
    """The UI server and its workers (its own process group)."""
    try:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # (uvicorn may wait long for its worker under load)
        os.killpg(ui.pid, signal.SIGKILL)


def pages(folder: Path, base: str) -> dict[str, tuple[str, str]]:
    """The pages to shoot, by PNG name: (address, a text the page shows once it has loaded)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("spiral").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("labnet.role") == "sweep"]
    best_id, best = parent.data.tags["labnet.best_run_id"], parent.data.tags["labnet.best_run"]
    (model,) = client.search_logged_models([experiment], filter_string=f"source_run_id = '{best_id}'")
    site = f"{base}/#/experiments/{experiment}"
    compared = quote(json.dumps([r.info.run_id for r in runs if r.info.run_id != parent.info.run_id]))
    in_experiment = quote(json.dumps([experiment]))
    return {
        "mlflow_sweep_parent.png": (f"{site}/runs/{parent.info.run_id}", "Look further"),
        "mlflow_runs.png": (f"{site}/runs", parent.info.run_name),
        "mlflow_compare.png": (f"{base}/#/compare-runs?runs={compared}&experiments={in_experiment}", best),
        "mlflow_run_metrics.png": (f"{site}/runs/{best_id}/model-metrics", "train_loss"),
        "mlflow_models.png": (f"{site}/models", best),
        "mlflow_model.png": (f"{site}/models/{model.model_id}", "probabilities per class"),
    }


def browser_session(binary: str, profile: Path):
    """Headless Chromium driven through Debian's chromedriver (selenium from PyPI), offline."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS + [f"--user-data-dir={profile}", f"--window-size={WINDOW}"]:
        options.add_argument(flag)
    driver_path = shutil.which("chromedriver") or sys.exit(
        "screenshots: no chromedriver found (Debian: apt-get install chromium-driver)"
    )
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def tidy(driver, url: str, ready_text: str) -> None:
    """The UI as someone comparing training runs sets it, once per session (the browser keeps it): its
    "Model training" mode (the switch opens the runs list) and no assistant panel."""
    wait_for(driver, url, ready_text)
    driver.execute_script(
        """
        for (const el of document.querySelectorAll('button, [role=radio], label, span')) {
          if (el.innerText && el.innerText.trim() === 'Model training') { el.click(); break; }
        }
        """
    )
    time.sleep(3)
    driver.execute_script(
        """
        for (const el of document.querySelectorAll('button[aria-label]')) {
          if (/close/i.test(el.getAttribute('aria-label'))) el.click();
        }
        """
    )
    time.sleep(2)


def wait_for(driver, url: str, ready_text: str) -> None:
    driver.get(url)
    driver.refresh()  # (a route change within the page can keep the previous page's state)
    deadline = time.time() + LOAD_SECONDS
    while time.time() < deadline:
        body = driver.execute_script("return document.body ? document.body.innerText : ''") or ""
        if ready_text in body:
            return
        time.sleep(1)
    print(f"screenshots: warning: {url} did not show {ready_text!r} within {LOAD_SECONDS} s", file=sys.stderr)


def shoot(driver, url: str, ready_text: str, png: Path) -> None:
    """Open ``url``, wait until it shows ``ready_text`` (then a moment for its charts), save a PNG."""
    wait_for(driver, url, ready_text)
    time.sleep(SETTLE_SECONDS)
    driver.save_screenshot(str(png))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="where the PNGs go")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per job (default 30)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and say where it is")
    args = parser.parse_args(argv)
    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="labnet-screens-"))
    try:
        run_sweep(folder, args.epochs)
        port = free_port()
        ui = start_ui(folder, port)
        try:
            driver = browser_session(browser, folder / "chromium-profile")
            try:
                shots = pages(folder, f"http://127.0.0.1:{port}")
                tidy(driver, *shots["mlflow_runs.png"])
                for name, (url, ready_text) in shots.items():
                    shoot(driver, url, ready_text, args.out / name)
                    print(f"screenshots: {args.out / name}")
            finally:
                driver.quit()
        finally:
            stop(ui)
    finally:
        if args.keep:
            print(f"screenshots: kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
