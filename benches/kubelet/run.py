#!/usr/bin/env python3
"""Hundreds of kubelet rotations: does the agent's cost per line stay flat?

Method: builds the agent in release mode and follows a Kubernetes-style
pod folder (`pods/NS_POD_UID/CONTAINER/0.log`) with `--stdout` (events go
to a pipe this script counts). The script is the runtime and the kubelet:
it writes CRI records (stdout access lines of ~200 bytes, a stderr line
between every ten) and rotates as the kubelet does (rename to
`0.log.<time>`, gzip the older rotated files through `.tmp`, delete
beyond five files) every ROTATE_BYTES, sped up: ROTATIONS rotations in
all, written in SEGMENTS segments. After each segment it waits until the
agent printed every line so far, then reads the agent's CPU time
(utime + stime of /proc/PID/stat) and the checkpoint store's size. It
prints the CPU per line of the first and the last segment, their ratio,
and the store's entries over the run.

    python3 benches/kubelet/run.py [--rotations 600] [--segments 10]

Figures move with the machine; the ratio last/first is what to read.
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Kubelet:
    def __init__(self, folder, rotate_bytes):
        self.folder = folder
        self.rotate_bytes = rotate_bytes
        self.live = os.path.join(folder, "0.log")
        self.file = open(self.live, "ab")
        self.size = 0
        self.rotations = 0
        self.records = 0

    def write(self, lines):
        out = bytearray()
        for stream, text in lines:
            self.records += 1
            s, us = divmod(self.records, 1_000_000)
            out += f"2026-12-06T23:{35 + s // 60:02}:{s % 60:02}.{us:06}123Z {stream} F {text}\n".encode()
        self.file.write(out)
        self.file.flush()
        self.size += len(out)
        if self.size >= self.rotate_bytes:
            self.rotate()

    def rotate(self):
        rotated = sorted(
            n for n in os.listdir(self.folder)
            if n.startswith("0.log.") and not n.endswith(".tmp")
        )
        while len(rotated) > 3:
            os.remove(os.path.join(self.folder, rotated.pop(0)))
        for name in rotated:
            if name.endswith(".gz"):
                continue
            path = os.path.join(self.folder, name)
            with open(path, "rb") as src, gzip.open(path + ".tmp", "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst)
            os.rename(path + ".tmp", path + ".gz")
            os.remove(path)
        self.rotations += 1
        r = self.rotations
        os.rename(self.live, f"{self.live}.20261206-{r // 3600 % 24:02}{r // 60 % 60:02}{r % 60:02}")
        self.file.close()
        self.file = open(self.live, "ab")
        self.size = 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rotations", type=int, default=600)
    p.add_argument("--segments", type=int, default=10)
    p.add_argument("--rotate-kib", type=int, default=256)
    p.add_argument("--agent", help="a built agent binary (default: build target/release)")
    args = p.parse_args()
    agent = args.agent
    if not agent:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        agent = os.path.join(ROOT, "target/release/cerberus-agent")

    work = tempfile.mkdtemp(prefix="kubelet-bench-")
    folder = os.path.join(work, "pods", "shop_web-1_0b6f9a52-3c1e-4d7a-9f0e-2a1b3c4d5e6f", "nginx")
    os.makedirs(folder)
    state = os.path.join(work, "state")
    kubelet = Kubelet(folder, args.rotate_kib * 1024)
    proc = subprocess.Popen(
        [agent, "--log", os.path.join(work, "pods/*/*/*.log"), "--format", "nginx_combined",
         "--stdout", "--state-dir", state, "--secret-key", "bench"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CERBERUS_LOG_FILTER": "warn"},
    )
    printed = [0]

    def count():
        for _ in proc.stdout:
            printed[0] += 1

    threading.Thread(target=count, daemon=True).start()
    time.sleep(1.0)  # its first look (an empty folder): anything written later is read from 0

    written = 0
    per_segment = args.rotations // args.segments
    rows = []
    last_cpu, last_written = cpu_seconds(proc.pid), 0
    for seg in range(args.segments):
        target = (seg + 1) * per_segment
        while kubelet.rotations < target:
            batch = []
            for _ in range(200):
                i = written
                batch.append(("stdout",
                              f'10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256} - - [06/Dec/2026:23:35:41 +0000] '
                              f'"GET /item/{i}?q=1 HTTP/1.1" 200 {i % 5000} "-" "Mozilla/5.0 (X11; Linux x86_64) bench/{i % 97}"'))
                if i % 10 == 0:
                    batch.append(("stderr", f"worker {i % 8}: request {i} handled"))
                written += 1
            kubelet.write(batch)
            # Keep within the three rotated files the kubelet keeps.
            while written - printed[0] > 2 * args.rotate_kib * 1024 // 220:
                time.sleep(0.01)
        deadline = time.time() + 120
        while printed[0] < written and time.time() < deadline:
            time.sleep(0.01)
        if printed[0] < written:
            sys.exit(f"the agent printed {printed[0]} of {written} lines")
        cpu = cpu_seconds(proc.pid)
        time.sleep(11)  # a look for gone files (every 10 s) and a save
        store = json.load(open(os.path.join(state, "checkpoints.json")))
        files_on_disk = len(os.listdir(folder))
        rows.append((seg, kubelet.rotations, written - last_written,
                     (cpu - last_cpu) / (written - last_written) * 1e6,
                     len(store["files"]), files_on_disk))
        last_cpu, last_written = cpu_seconds(proc.pid), written
    proc.terminate()
    proc.wait()
    shutil.rmtree(work)

    print(f"{'segment':>7} {'rotations':>9} {'lines':>8} {'CPU us/line':>11} {'store entries':>13} {'files on disk':>13}")
    for seg, rot, n, us, entries, files in rows:
        print(f"{seg:>7} {rot:>9} {n:>8} {us:>11.2f} {entries:>13} {files:>13}")
    first, last = rows[0][3], rows[-1][3]
    print(f"CPU per line, last segment / first: {last / first:.2f}")


if __name__ == "__main__":
    main()
