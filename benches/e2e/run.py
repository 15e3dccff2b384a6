#!/usr/bin/env python3
"""End-to-end benchmark of cerberus-agent, on this machine, 127.0.0.1 only.

Method: builds the agent and the receiver (benches/e2e/receiver.rs) in
release mode; generates deterministic nginx `combined` inputs (seeded
random: ~220-byte lines, real user agents, query strings, percent-encoded
paths) with one of two spreads of client IPs (--ips):

  few      a heavy-tailed (Pareto) draw from 20,000 addresses: a handful of
           clients make most requests (the input earlier figures used)
  zipf     100,000 distinct addresses, Zipf-distributed (s = 1), as on a
           busy public site: most IP hashes miss a small cache

then, for each input, runs each case RUNS times, the cases taking turns
(one run of each per round), and prints the medians:

  stdout          baseline: `--once --stdout > /dev/null`, the same parsing
                  with no network (ratios below are against it)
  batch           `--once` to a receiver that acknowledges each batch,
                  `--compression off`
  batch+deflate   the same with permessage-deflate (the default)
  single          `--wire single` (one event per message), no compression
  single+deflate  the same with permessage-deflate
  batch+deflate-py  batch + deflate to a backend written with Python's
                  `websockets` (tests/peers/middleware_backend.py, from
                  target/test-venv: run tests/setup.sh once), the backend
                  most users run, with its own defaults: it takes the
                  agent's first offer, which lets it name no window, so
                  the agent compresses with 32 KiB (window_bits=15); wire
                  bytes are counted by a relay between the agent and it
  batch+deflate-py12  the same backend insisting on a 4 KiB window
                  (`require_client_max_window_bits`, 12 bits): it takes
                  the agent's second offer
  batch+deflate-slow  batch + deflate to the receiver replying to each batch
                  3.5 ms late (--ack-delay-us): a backend as slow as the
                  Python one without its CPU on this machine, which tells
                  the cost of waiting on a slow backend from the cost of
                  sharing the cores with it
  instructions  the agent under valgrind's callgrind on the first 100,000
           lines: instructions per line of stdout, batch, batch+deflate (32
           KiB and 4 KiB windows, the bench receiver) and batch+deflate-py,
           and their ratios to stdout. Instruction counts do not move with
           a busy machine, a slow backend or sleeping between batches (the
           same count whether the receiver answers at once or 300 ms late),
           so they tell what the agent's code costs apart from what the
           machine does to it; valgrind is a Debian package (not installed
           by tests/setup.sh: the tests do not need it)
  latency  a writer appends 2,000 lines/s for 10 s to a followed file, each
           line stamped with its write time; the receiver records write →
           arrival (p50, p99)
  idle     20 watched files, nothing written, for IDLE_SECONDS: agent CPU
           time and wake-ups (voluntary context switches, all threads)

Agent CPU time comes from wait4() (the kernel's rusage of that child).
Peak RSS is the agent's own VmHWM, read from /proc while it runs (wait4's
ru_maxrss would carry over this Python process's peak through fork and
exec). Bytes on the wire per event are the bytes the receiver's socket
read (WebSocket frames, after compression) over the events received.
Figures move with the machine (2x and more between machines of the same
kind); compare the ratios, measured in the same run.

Usage: python3 benches/e2e/run.py [--lines N] [--runs R] [--idle-seconds S] [--agent BINARY] [--before BINARY]
           [--ips few,zipf] [--cases stdout,batch,batch+deflate,batch+deflate-py,batch+deflate-py12,batch+deflate-slow,single,single+deflate,instructions,latency,idle]
"""
import argparse
import bisect
import contextlib
import itertools
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.path.join(ROOT, "target", "release", "cerberus-agent")
RECEIVER = os.path.join(ROOT, "target", "release", "examples", "bench-receiver")
VENV_PYTHON = os.path.join(ROOT, "target", "test-venv", "bin", "python3")
PY_BACKEND = os.path.join(ROOT, "tests", "peers", "middleware_backend.py")

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
    "python-requests/2.32.3",
]
PATHS = [
    "/?utm_source=newsletter&utm_medium=email", "/api/v1/products/{n}?include=stock", "/api/v1/products?page={n}&sort=price", "/static/app.{n}.js",
    "/search?q=caf%C3%A9+{n}&lang=de", "/account/orders/{n}/invoice.pdf", "/health",
    "/api/v1/cart/{n}/items", "/blog/2026/11/{n}-mon-article-%C3%A9t%C3%A9",
]


def ip_picker(rng, spread):
    """A function drawing one client IP per call, by the spread's name."""
    def address():
        return f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if spread == "few":
        ips = [address() for _ in range(20000)]
        return lambda: ips[min(int(rng.paretovariate(1.2)) - 1, len(ips) - 1)]
    if spread == "zipf":
        ips = [address() for _ in range(100_000)]
        cumulative = list(itertools.accumulate(1.0 / k for k in range(1, len(ips) + 1)))
        total = cumulative[-1]
        return lambda: ips[min(bisect.bisect_left(cumulative, rng.random() * total), len(ips) - 1)]
    sys.exit(f"unknown --ips {spread}: few or zipf")


def generate(path, lines, spread="few", seed=20261125):
    rng = random.Random(seed)
    pick_ip = ip_picker(rng, spread)
    t = 1764064800  # 2025-11-25 10:00:00 UTC
    with open(path, "w") as f:
        for i in range(lines):
            if i % 500 == 0:
                t += 1
            ip = pick_ip()
            ts = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t))
            method = "GET" if rng.random() < 0.85 else rng.choice(["POST", "PUT", "DELETE"])
            p = rng.choice(PATHS).format(n=rng.randint(1, 99999))
            status = rng.choice([200] * 17 + [301, 404, 500])
            size = rng.randint(0, 60000)
            ref = "-" if rng.random() < 0.3 else f"https://shop.example.com/{rng.choice(['', 'cart', 'search?q=shoes&size=42'])}"
            ua = rng.choice(USER_AGENTS)
            f.write(f'{ip} - - [{ts}] "{method} {p} HTTP/1.1" {status} {size} "{ref}" "{ua}"\n')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_receiver(expected, latency=False, ack_delay_us=0):
    port = free_port()
    args = [RECEIVER, str(port), str(expected)] + (["--latency"] if latency else [])
    args += ["--ack-delay-us", str(ack_delay_us)] if ack_delay_us else []
    rx = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if rx.stdout.readline().strip() != "ready":
        sys.exit("the receiver did not start")
    return rx, port


def peak_rss_kib(pid):
    """The process's own high-water mark of resident memory, or 0."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_agent(args, stdout=subprocess.DEVNULL):
    """Runs the agent to its end; returns (wall s, cpu s, peak RSS KiB)."""
    start = time.monotonic()
    p = subprocess.Popen([AGENT] + args, stdout=stdout, stderr=subprocess.DEVNULL)
    peak = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], peak_rss_kib(p.pid))
            done.wait(0.02)
    watcher = threading.Thread(target=watch)
    watcher.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - start
    done.set()
    watcher.join()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"agent failed: {args}")
    return wall, usage.ru_utime + usage.ru_stime, peak[0]


def common_args(state):
    return ["--format", "nginx_combined", "--secret-key", "bench-secret", "--state-dir", state,
            "--pattern-dir", "/nonexistent"]


def once_to(log, port, compression, wire="batch"):
    """The agent's flags for reading `log` once to the backend on `port`."""
    return ["--log", log, "--once", "--ws-url", f"ws://127.0.0.1:{port}/", "--wire", wire, "--compression", compression]


def case_throughput(log, lines, wire, compression, extra, ack_delay_us=0):
    rx, port = start_receiver(lines, ack_delay_us=ack_delay_us)
    with tempfile.TemporaryDirectory() as state:
        wall, cpu, rss = run_agent(once_to(log, port, compression, wire) + common_args(state) + extra)
    out, _ = rx.communicate(timeout=60)
    fields = dict(kv.split("=") for kv in out.split())
    got = int(fields["events"])
    if got < lines:
        sys.exit(f"receiver got {got} of {lines} events")
    return {"lines_per_s": lines / wall, "cpu_us_per_line": cpu / lines * 1e6, "peak_rss_mib": rss / 1024,
            "wire_bytes_per_event": int(fields["wire_bytes"]) / got,
            "message_bytes_per_event": int(fields["message_bytes"]) / got}


class Relay:
    """A TCP relay on 127.0.0.1 in front of `port`, counting the bytes the
    agent sends (WebSocket frames after compression)."""

    def __init__(self, port):
        self.sent = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = port
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, False), daemon=True).start()

    def pump(self, src, dst, counted):
        buf = bytearray(256 * 1024)
        try:
            while True:
                n = src.recv_into(buf)
                if n == 0:
                    break
                dst.sendall(memoryview(buf)[:n])
                if counted:
                    with self.lock:
                        self.sent += n
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@contextlib.contextmanager
def python_backend(received, backend_args=()):
    """The Python backend (batch exchange) on a free port, storing events
    in `received`; yields its port and stops it after."""
    if not os.path.exists(VENV_PYTHON):
        sys.exit("the Python backend needs target/test-venv: run tests/setup.sh first")
    port = free_port()
    backend = subprocess.Popen([VENV_PYTHON, PY_BACKEND, str(port), received, "--wire", "batch", *backend_args],
                               stdout=subprocess.PIPE, text=True)
    try:
        if backend.stdout.readline().strip() != "listening":
            sys.exit("the Python backend did not start")
        yield port
    finally:
        backend.terminate()
        backend.wait(timeout=30)


def case_python_backend(log, lines, extra, backend_args=()):
    with tempfile.TemporaryDirectory() as state:
        received = os.path.join(state, "events.jsonl")
        with python_backend(received, backend_args) as port:
            relay = Relay(port)
            try:
                wall, cpu, rss = run_agent(once_to(log, relay.port, "deflate") + common_args(state) + extra)
            finally:
                relay.close()
        with open(received, "rb") as f:
            got = sum(1 for _ in f)
        with open(received + ".connections") as f:
            negotiated = f.read().split()
    if got < lines:
        sys.exit(f"the Python backend got {got} of {lines} events")
    if "permessage-deflate" not in negotiated:
        sys.exit(f"compression was not negotiated with the Python backend: {negotiated}")
    # The window the backend inflates the agent's messages with.
    window = [int(t.split("=")[1]) for t in negotiated if t.startswith("client_max_window_bits=")]
    return {"lines_per_s": lines / wall, "cpu_us_per_line": cpu / lines * 1e6, "peak_rss_mib": rss / 1024,
            "wire_bytes_per_event": relay.sent / got, "window_bits": max(window, default=0)}


def counted(args, lines):
    """Runs the agent under callgrind to its end; its instructions per line."""
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", AGENT] + args,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"agent under callgrind failed: {args}\n{p.stderr[-2000:]}")
    collected = [l for l in p.stderr.splitlines() if "Collected :" in l]
    if not collected:
        sys.exit(f"callgrind reported no count: {p.stderr[-2000:]}")
    return int(collected[-1].split(":")[-1].strip().replace(",", "")) / lines


def case_instructions(log, lines=100_000):
    if subprocess.run(["valgrind", "--version"], capture_output=True).returncode != 0:
        sys.exit("the instructions case needs valgrind (apt-get install valgrind)")
    out = {}
    with tempfile.TemporaryDirectory() as state:
        part = os.path.join(state, "part.log")
        with open(log) as src, open(part, "w") as dst:
            taken = list(itertools.islice(src, lines))
            dst.writelines(taken)
        # Fewer when the input is shorter (`--lines`).
        lines = len(taken)
        small = os.path.join(state, "window12.toml")
        with open(small, "w") as f:
            f.write("compression_window_bits = 12\n")

        def common(name):
            return common_args(os.path.join(state, name))
        out["stdout"] = counted(["--log", part, "--once", "--stdout"] + common("stdout"), lines)
        for name, compression, extra in (("batch", "off", []), ("batch+deflate", "deflate", []),
                                         ("batch+deflate-w12", "deflate", ["--config", small])):
            rx, port = start_receiver(lines)
            out[name] = counted(once_to(part, port, compression) + extra + common(name), lines)
            rx.communicate(timeout=60)
        if os.path.exists(VENV_PYTHON):
            with python_backend(os.path.join(state, "events.jsonl")) as port:
                out["batch+deflate-py"] = counted(once_to(part, port, "deflate") + common("py"), lines)
    for name, n in out.items():
        print(f"instructions {name:20} {n:,.0f} a line, {n / out['stdout']:.2f} x stdout", flush=True)
    return out


def case_stdout(log, lines):
    with tempfile.TemporaryDirectory() as state:
        wall, cpu, rss = run_agent(["--log", log, "--once", "--stdout"] + common_args(state))
    return {"lines_per_s": lines / wall, "cpu_us_per_line": cpu / lines * 1e6, "peak_rss_mib": rss / 1024}


def case_latency(rate=2000, seconds=10):
    total = rate * seconds
    rx, port = start_receiver(total, latency=True)
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "access.log")
        open(log, "w").close()
        agent = subprocess.Popen([AGENT, "--log", log, "--ws-url", f"ws://127.0.0.1:{port}/"] + common_args(d),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        with open(log, "a", buffering=1) as f:
            start = time.monotonic()
            for i in range(total):
                due = start + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                f.write(f'10.1.{i // 250 % 250}.{i % 250 + 1} - - [25/Nov/2026:10:00:00 +0000] '
                        f'"GET /t/{time.time_ns()} HTTP/1.1" 200 5 "-" "bench"\n')
        out, _ = rx.communicate(timeout=60)
        agent.terminate()
        agent.wait(timeout=30)
    fields = dict(kv.split("=") for kv in out.split())
    return {"p50_ms": float(fields["p50_ms"]), "p99_ms": float(fields["p99_ms"])}


def task_stat(pid):
    """(cpu seconds, voluntary context switches) over all threads."""
    cpu = 0.0
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    switches += int(line.split()[1])
    return cpu, switches


def case_idle(seconds):
    rx, port = start_receiver(10**9)
    with tempfile.TemporaryDirectory() as d:
        args = []
        for i in range(20):
            path = os.path.join(d, f"site{i}.access.log")
            with open(path, "w") as f:
                f.write('10.0.0.1 - - [25/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "x"\n')
            args += ["--log", path]
        agent = subprocess.Popen([AGENT] + args + ["--ws-url", f"ws://127.0.0.1:{port}/"] + common_args(d),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # start-up done
        cpu0, sw0 = task_stat(agent.pid)
        time.sleep(seconds)
        cpu1, sw1 = task_stat(agent.pid)
        agent.terminate()
        agent.wait(timeout=30)
    rx.stdin.close()
    rx.wait(timeout=10)
    return {"cpu_ms": (cpu1 - cpu0) * 1000, "wakeups_per_s": (sw1 - sw0) / seconds}


def with_agent(binary, run):
    """`run` with AGENT set to `binary` for its duration."""
    def go():
        global AGENT
        saved, AGENT = AGENT, binary
        try:
            return run()
        finally:
            AGENT = saved
    return go


def median_of(results):
    keys = results[0].keys()
    return {k: statistics.median(r[k] for r in results) for k in keys}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


# The Python backend's pace on the Zipf input (about 270 events a batch at
# 75,000 events/s): the delay of each of the slow receiver's replies.
SLOW_ACK_US = 3500

THROUGHPUT = {
    "batch": ("batch", "off"),
    "batch+deflate": ("batch", "deflate"),
    "single": ("single", "off"),
    "single+deflate": ("single", "deflate"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--single-lines", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle-seconds", type=int, default=60)
    ap.add_argument("--ips", default="few,zipf", help="client IP spreads: few, zipf, or both")
    ap.add_argument("--cases", default="stdout,batch,batch+deflate,batch+deflate-py,single,single+deflate,"
                    "latency,idle")
    ap.add_argument("--agent-args", default="", help="extra agent flags for the WebSocket cases (tuning)")
    ap.add_argument("--before", default=None,
                    help="an older agent binary: its WebSocket cases run in the same rounds (CASE@before)")
    ap.add_argument("--agent", default=None,
                    help="another agent binary to measure (an older build, for a before/after in one sitting)")
    a = ap.parse_args()
    global AGENT
    if a.agent:
        AGENT = os.path.abspath(a.agent)
    cases = a.cases.split(",")
    extra = a.agent_args.split()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "cerberus-agent",
                    "--example", "bench-receiver"], cwd=ROOT, check=True)
    work = os.path.join(ROOT, "target", "bench-e2e")
    os.makedirs(work, exist_ok=True)
    print(f"agent: {AGENT}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; median of {a.runs} runs; "
          "figures move with the machine: compare the ratios")

    def report(name, res):
        print(f"{name:22} " + "  ".join(f"{k}={v:,.3f}" if v < 100 else f"{k}={v:,.0f}" for k, v in res.items()),
              flush=True)
        return res

    def input_for(spread, lines):
        path = os.path.join(work, f"nginx-{spread}-{lines}.log")
        if not os.path.exists(path):
            generate(path, lines, spread)
        return path

    for spread in a.ips.split(","):
        log = input_for(spread, a.lines)
        size = os.path.getsize(log)
        print(f"-- ips={spread}: {a.lines} lines, {size / a.lines:.0f} bytes/line "
              f"(single: {a.single_lines} lines)")
        # The cases take turns, one run each per round, so that a machine
        # getting busier or quieter during the sitting moves them alike;
        # ratios are given both of the medians and as the median of each
        # round's ratio (the steadier of the two on a shared machine).
        runners = {}
        if "stdout" in cases:
            runners["stdout"] = lambda: case_stdout(log, a.lines)
        for case, (wire, compression) in THROUGHPUT.items():
            if case not in cases:
                continue
            path, lines = (log, a.lines) if wire == "batch" else (input_for(spread, a.single_lines), a.single_lines)
            runners[case] = (lambda path=path, lines=lines, wire=wire, compression=compression:
                             case_throughput(path, lines, wire, compression, extra))
        if "batch+deflate-py" in cases:
            runners["batch+deflate-py"] = lambda: case_python_backend(log, a.lines, extra)
        if "batch+deflate-py12" in cases:
            runners["batch+deflate-py12"] = lambda: case_python_backend(log, a.lines, extra,
                                                                        ("--client-window-bits", "12"))
        if "batch+deflate-slow" in cases:
            runners["batch+deflate-slow"] = lambda: case_throughput(log, a.lines, "batch", "deflate", extra,
                                                                    ack_delay_us=SLOW_ACK_US)
        if a.before:
            # The same WebSocket cases with the older binary, in the same
            # rounds: a before/after from one sitting.
            for name in [n for n in runners if n != "stdout"]:
                runners[f"{name}@before"] = with_agent(os.path.abspath(a.before), runners[name])
        rounds = {name: [] for name in runners}
        for _ in range(a.runs):
            for name, run in runners.items():
                rounds[name].append(run())
        out = {name: report(f"{spread} {name}", median_of(results)) for name, results in rounds.items()}
        base = out.get("stdout")
        for case in out:
            if base and case != "stdout":
                paired = statistics.median(r["cpu_us_per_line"] / b["cpu_us_per_line"]
                                           for r, b in zip(rounds[case], rounds["stdout"]))
                print(f"ratio {spread} {case}/stdout: cpu_us_per_line "
                      f"{out[case]['cpu_us_per_line'] / base['cpu_us_per_line']:.2f} "
                      f"(median of each round's: {paired:.2f}), lines_per_s "
                      f"{out[case]['lines_per_s'] / base['lines_per_s']:.2f}")
        for plain, packed in (("batch", "batch+deflate"), ("single", "single+deflate")):
            if plain in out and packed in out:
                print(f"ratio {spread} {packed}/{plain}: wire bytes "
                      f"{out[packed]['wire_bytes_per_event'] / out[plain]['wire_bytes_per_event']:.3f}, "
                      f"cpu {out[packed]['cpu_us_per_line'] / out[plain]['cpu_us_per_line']:.2f}")
    if "instructions" in cases:
        case_instructions(input_for("zipf", a.lines))
    if "latency" in cases:
        report("latency", median_of([case_latency() for _ in range(a.runs)]))
    if "idle" in cases:
        report("idle", median_of([case_idle(a.idle_seconds) for _ in range(a.runs)]))


if __name__ == "__main__":
    main()
