"""A real multi-node Ray cluster on this machine, for the tests and `lincir perf ray`: `ray start --head` and one
`ray start --address=...` per further node, each with its own CPU count, all on 127.0.0.1, all
under one temporary folder (`--temp-dir`), so nothing here touches another Ray on the machine.

Each `ray start --block` runs in a session of its own; every process of a node (GCS, raylet, its
workers) stays in that session, so `stop()` ends exactly those processes by their ids, found by
session. `ray stop` is never used: it ends every Ray process of the machine by name.

    with LocalCluster(nodes=2) as cluster:
        ray.init(address=cluster.address)
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90  # two nodes start in ~12 s on the 2-core development machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class LocalCluster:
    def __init__(self, nodes: int = 2, cpus: int = 1):
        self.nodes, self.cpus = nodes, cpus
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = Path(tempfile.mkdtemp(prefix="lincir-ray-"))
        self.started: list[subprocess.Popen] = []

    def start(self) -> LocalCluster:
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0",
                  f"--temp-dir={self.temp}", "--disable-usage-stats", "--block"]
        self._node("head", ["--head", f"--port={self.port}", "--include-dashboard=false", *common])
        self._wait(lambda: answers(self.port), "the head node's GCS")
        for i in range(1, self.nodes):
            self._node(f"node{i}", [f"--address={self.address}", *common])
        self._wait(lambda: self.alive_nodes() >= self.nodes, f"{self.nodes} nodes")
        return self

    def _node(self, name: str, args: list[str]) -> None:
        # workers import this checkout's `pipeline`, as the stages' drivers do
        path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": path}
        env.pop("RAY_ADDRESS", None)
        log = open(self.temp / f"{name}.log", "w")
        self.started.append(subprocess.Popen([str(BIN / "ray"), "start", *args], stdout=log, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True))

    def alive_nodes(self) -> int:
        """Nodes `ray status` lists as active (it asks the GCS; the state API would need the dashboard)."""
        done = subprocess.run([str(BIN / "ray"), "status", f"--address={self.address}"], capture_output=True,
                              text=True, timeout=60)
        active = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0] if done.returncode == 0 else ""
        return len(re.findall(r"^ \d+ node_", active, re.M))

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if any(p.poll() is not None for p in self.started):
                logs = "\n".join(p.read_text()[-1500:] for p in sorted(self.temp.glob("*.log")))
                self.stop()
                raise RuntimeError(f"a `ray start` exited while waiting for {what}:\n{logs}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{what} not up after {START_TIMEOUT_S} s")
            time.sleep(0.3)

    def processes(self) -> list[psutil.Process]:
        """Every live process of the cluster: those in the sessions its `ray start`s opened."""
        sessions = {p.pid for p in self.started}
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (OSError, psutil.Error):
                continue
        return found

    def worker_pids(self, name: str) -> list[int]:
        """Live Ray worker processes whose title names `name` (an actor's class: `ray::Tagger`)."""
        out = []
        for proc in self.processes():
            try:
                if name in " ".join(proc.cmdline()):
                    out.append(proc.pid)
            except psutil.Error:
                continue
        return out

    def stop(self) -> None:
        """SIGKILL to every process of the cluster (a test cluster has nothing to drain), then its folder."""
        for _ in range(3):
            procs = self.processes()
            if not procs:
                break
            for proc in procs:
                try:
                    proc.send_signal(signal.SIGKILL)
                except psutil.Error:
                    pass
            psutil.wait_procs(procs, timeout=5)
        for p in self.started:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
