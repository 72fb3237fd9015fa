"""Live capture throughput: AF_PACKET ring vs recvmsg, over a veth pair between two namespaces (root).

    .venv/bin/python benchmarks/live.py                        # the full run, about 4 minutes
    .venv/bin/python benchmarks/live.py --seconds 3 --rates 20000,100000,300000 --engine-seconds 5
    .venv/bin/python benchmarks/live.py --smoke                # CI: a few seconds, not a measurement

1. Creates namespaces ``cw-bench-a-<pid>`` and ``cw-bench-b-<pid>`` joined by a veth pair (deleted at
   the end, also on error or Ctrl-C).
2. Writes the traffic once: the scenario's 50-camera site (lab/scenario.py, benchmark shape:
   RTP video from 50 cameras, mean frame about 1,170 bytes) over 2 s of site time, plus all of the
   scenario's control and persona traffic (RTSP, DNS, NTP, phone-home, discovery, UPnP).
3. For each rate of a ramp, starts a fresh capture process in namespace B (``ip netns exec``) and a
   sender in namespace A that writes the frames, cycling, at that rate for ``--seconds`` with
   ``sendmmsg`` on a raw AF_PACKET socket (ctypes: one system call per up to 1,024 frames). A step is
   clean when the kernel reports no drops and every frame sent was captured; a step that drops is run
   up to twice more (other load on the machine stalls the capture now and then) and counts as unclean
   only if every try drops. The ramp of a source stops at its first unclean step. The ramp runs twice: the
   source alone (each batch counted and dropped) and the source feeding the real engine
   (``Engine.feed`` on every batch).
4. Runs each source with the engine at the 50-camera rate (``--engine-pps``, 20,000 packets/s) for
   ``--engine-seconds``, and reports the capture process's CPU (user + system from getrusage, over
   the capture only, not start-up) and resident memory (VmRSS, VmHWM from /proc/self/status).

The sender is pinned to CPU 0 and the capture to CPU 1 (on a machine with two CPUs or more): the
kernel's receive path for the veth (down to the copy into the ring or the socket queue) runs in the
sender's context on CPU 0, so the capture CPU is what the capture process itself costs.

Prints a Markdown table on stdout (progress on stderr) and writes everything as JSON to
``benchmarks/out/live.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_DIR = HERE / "out"
sys.path.insert(0, str(ROOT))

IF_A, IF_B = "cwbench-a", "cwbench-b"
METHODS = ("ring", "recv")
# The last step, 0, means "as fast as the sender can" (about 600k packets/s on a 2-CPU VM).
DEFAULT_RATES = (20_000, 50_000, 100_000, 200_000, 300_000, 400_000, 500_000, 0)
UNLIMITED = 1_000_000_000
ETH_P_ALL = 0x0003
SENDMMSG_MAX = 1024  # UIO_MAXIOV
RETRIES = 2  # a ramp step that drops is tried this many more times


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- traffic


def build_frames(path: Path, video_seconds: float = 2.0) -> dict[str, Any]:
    """Write the frames file (u32 length + frame, repeated); returns counts."""
    from itertools import takewhile

    from lab import scenario

    shape = scenario.benchmark_shape(int(video_seconds * 20_000) + 20_000)
    end = shape.start_ns + int((0.5 + video_seconds) * scenario.NS)  # video starts half a second in
    video = [f for _, f in takewhile(lambda e: e[0] < end, scenario.video_streams(shape))]
    control = sorted(scenario.control_events(shape) + scenario.persona_events(shape), key=lambda e: e[0])
    # Spread the control frames evenly through the video so that every second of a run has some.
    frames: list[bytes] = []
    step = max(1, len(video) // max(1, len(control)))
    ci = 0
    for i, frame in enumerate(video):
        if i % step == 0 and ci < len(control):
            frames.append(control[ci][1])
            ci += 1
        frames.append(frame)
    frames += [f for _, f in control[ci:]]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for frame in frames:
            fh.write(struct.pack("=I", len(frame)) + frame)
    total = sum(map(len, frames))
    return {
        "frames": len(frames),
        "video_frames": len(video),
        "control_frames": len(control),
        "mean_frame_bytes": round(total / len(frames), 1),
    }


def read_frames(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack_from("=I", data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


# ---------------------------------------------------------------------------------------- sender


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


def send_main(args: argparse.Namespace) -> int:
    """In namespace A: write the frames at ``--pps`` for ``--seconds``; print one JSON line."""
    _pin(args.cpu)
    frames = read_frames(Path(args.frames))
    n = len(frames)
    buf = ctypes.create_string_buffer(b"".join(frames))
    iovs = (_IoVec * n)()
    msgs = (_MMsgHdr * n)()
    base = ctypes.addressof(buf)
    iov_size = ctypes.sizeof(_IoVec)
    off = 0
    for i, frame in enumerate(frames):
        iovs[i].iov_base = base + off
        iovs[i].iov_len = len(frame)
        msgs[i].msg_hdr.msg_iov = ctypes.addressof(iovs) + i * iov_size
        msgs[i].msg_hdr.msg_iovlen = 1
        off += len(frame)
    lengths = [len(f) for f in frames]
    libc = ctypes.CDLL(None, use_errno=True)
    sendmmsg = libc.sendmmsg
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    sock = __import__("socket").socket(17, 3, 0)  # AF_PACKET, SOCK_RAW, no protocol: send only
    sock.bind((args.ifname, ETH_P_ALL))
    fd = sock.fileno()
    msg_base = ctypes.addressof(msgs)
    msg_size = ctypes.sizeof(_MMsgHdr)
    pps = float(args.pps) or UNLIMITED
    sent = 0
    sent_bytes = 0
    cursor = 0
    errors = 0
    print("START", flush=True)  # the parent samples the capture process's CPU from here
    started = time.monotonic()
    end = started + args.seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - started) * pps) - sent
        if due <= 0:
            time.sleep(0.0002)
            continue
        k = min(due, SENDMMSG_MAX, n - cursor)
        r = sendmmsg(fd, msg_base + cursor * msg_size, k, 0)
        if r < 0:
            errors += 1
            time.sleep(0.0001)  # ENOBUFS and the like: the sender's queue is full
            continue
        sent += r
        sent_bytes += sum(lengths[cursor : cursor + r])
        cursor = (cursor + r) % n
    elapsed = time.monotonic() - started
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "sent": sent,
                "sent_bytes": sent_bytes,
                "elapsed_s": elapsed,
                "errors": errors,
                "cpu_s": ru.ru_utime + ru.ru_stime,
            }
        ),
        flush=True,
    )
    return 0


# ---------------------------------------------------------------------------------------- capture


def _pin(cpu: int) -> None:
    if cpu >= 0 and cpu < (os.cpu_count() or 1):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def _proc_status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key + "_kib"] = int(value.split()[0])
    return out


def capture_main(args: argparse.Namespace) -> int:
    """In namespace B: capture until a line arrives on stdin; print one JSON line."""
    from agents.capture.afpacket import RecvSource, RingSource

    _pin(args.cpu)
    engine = None
    if args.with_engine:
        from monitor.engine import Engine, EngineConfig
        from monitor.policy import SitePolicy
        from monitor.vendors.oui import VendorTable

        policy = SitePolicy.from_yaml((ROOT / "examples/site-policy.yaml").read_text(), source="site-policy")
        engine = Engine(policy, VendorTable.load(), EngineConfig(observer="bench/live"))
    copy = args.method == "ring-copy"
    source = (
        RingSource(args.ifname, copy=copy).open()
        if args.method.startswith("ring")
        else RecvSource(args.ifname).open()
    )

    memory: dict[str, int] = {}

    def stop_on_stdin() -> None:
        sys.stdin.readline()
        memory.update(_proc_status())  # while the ring is still mapped
        source.close()

    threading.Thread(target=stop_on_stdin, daemon=True).start()
    packets = nbytes = batches = empty = alerts = flows = 0
    engine_s = feed_max_s = 0.0
    slow_feeds = max_batch = 0  # engine.feed calls over 20 ms; the largest batch
    gc_pause = {"max_s": 0.0, "total_s": 0.0, "started": 0.0}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_pause["started"] = time.perf_counter()
        else:
            pause = time.perf_counter() - gc_pause["started"]
            gc_pause["total_s"] += pause
            gc_pause["max_s"] = max(gc_pause["max_s"], pause)

    gc.callbacks.append(on_gc)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    print("READY", flush=True)
    for batch in source.batches():
        n = len(batch)
        batches += 1
        if n == 0:
            empty += 1
            if engine is not None:
                engine.tick(time.time_ns())
            continue
        packets += n
        max_batch = max(max_batch, n)
        nbytes += int(batch.wirelen.sum())
        if engine is not None:
            t = time.perf_counter()
            ev = engine.feed(batch)
            took = time.perf_counter() - t
            engine_s += took
            feed_max_s = max(feed_max_s, took)
            slow_feeds += took > 0.02
            alerts += len(ev.alerts)
            flows += len(ev.flows)
    wall = time.perf_counter() - wall0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    st = source.stats()
    result = {
        "method": args.method,
        "engine": bool(args.with_engine),
        "packets": packets,
        "bytes": nbytes,
        "batches": batches,
        "empty_batches": empty,
        "kernel_packets": st.kernel_packets,
        "kernel_drops": st.kernel_drops,
        "kernel_freeze_q": st.kernel_freeze_q,
        "wall_s": wall,
        "user_s": ru1.ru_utime - ru0.ru_utime,
        "sys_s": ru1.ru_stime - ru0.ru_stime,
        "engine_s": engine_s,
        "feed_max_s": feed_max_s,
        "slow_feeds": slow_feeds,
        "gc_max_pause_s": gc_pause["max_s"],
        "gc_total_s": gc_pause["total_s"],
        "max_batch": max_batch,
        "alerts": alerts,
        "flows_ended": flows,
        "engine_packets": engine.stats.packets if engine is not None else 0,
        **memory,
    }
    print(json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------- orchestration


@dataclass
class Step:
    method: str
    engine: bool
    target_pps: int
    seconds: float
    sent: int = 0
    sent_bytes: int = 0
    send_elapsed_s: float = 0.0
    sender_cpu_s: float = 0.0
    captured: int = 0
    kernel_packets: int = 0
    kernel_drops: int = 0
    kernel_freeze_q: int | None = None
    capture_cpu_s: float = 0.0  # getrusage over the whole capture (idle start and drain included)
    capture_wall_s: float = 0.0
    send_window_cpu_s: float = 0.0  # /proc/<pid>/stat of the capture process while the sender sent
    send_window_s: float = 0.0
    capture: dict[str, Any] = field(default_factory=dict)
    earlier_attempts: list[dict[str, Any]] = field(default_factory=list)  # tries that dropped
    loadavg_1min: float = 0.0  # of the machine before the step: other load stalls the capture

    @property
    def achieved_pps(self) -> float:
        return self.sent / self.send_elapsed_s if self.send_elapsed_s else 0.0

    @property
    def mbit_s(self) -> float:
        return self.sent_bytes * 8 / self.send_elapsed_s / 1e6 if self.send_elapsed_s else 0.0

    @property
    def cpu_pct(self) -> float:
        """The capture process's CPU while traffic flowed, in % of one CPU."""
        return 100 * self.send_window_cpu_s / self.send_window_s if self.send_window_s else 0.0

    @property
    def missing(self) -> int:
        return max(self.sent - self.captured, 0)

    @property
    def clean(self) -> bool:
        return self.sent > 0 and self.kernel_drops == 0 and self.captured >= self.sent

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            achieved_pps=round(self.achieved_pps),
            mbit_s=round(self.mbit_s, 1),
            missing=self.missing,
            clean=self.clean,
            capture_cpu_pct=round(self.cpu_pct, 1),
        )
        return d


class Bench:
    def __init__(self, frames: Path, tag: str) -> None:
        self.frames = frames
        self.ns_a = f"cw-bench-a-{tag}"
        self.ns_b = f"cw-bench-b-{tag}"
        ncpu = os.cpu_count() or 1
        self.send_cpu = 0 if ncpu >= 2 else -1
        self.capture_cpu = 1 if ncpu >= 2 else -1

    # namespaces ------------------------------------------------------------------------------
    def create(self) -> None:
        self.delete()
        for ns in (self.ns_a, self.ns_b):
            _run(["ip", "netns", "add", ns])
            _run(["ip", "netns", "exec", ns, "sh", "-c",
                  "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6;"
                  " echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"], check=False)  # fmt: skip
        _run(["ip", "link", "add", IF_A, "netns", self.ns_a, "type", "veth", "peer", "name", IF_B, "netns",
              self.ns_b])  # fmt: skip
        for ns, ifname, addr in ((self.ns_a, IF_A, "10.198.0.1/24"), (self.ns_b, IF_B, "10.198.0.2/24")):
            _run(["ip", "-n", ns, "addr", "add", addr, "dev", ifname])
            _run(["ip", "-n", ns, "link", "set", "dev", ifname, "up"])
        time.sleep(0.2)

    def delete(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            if Path("/run/netns", ns).exists():
                _run(["ip", "netns", "del", ns], check=False)

    # one measurement -------------------------------------------------------------------------
    def step(self, method: str, engine: bool, pps: int, seconds: float, drain_s: float = 1.0) -> Step:
        st = Step(method, engine, pps, seconds)
        argv = [sys.executable, __file__, "_capture", "--ifname", IF_B, "--method", method,
                "--cpu", str(self.capture_cpu)] + (["--with-engine"] if engine else [])  # fmt: skip
        cap = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_b, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert cap.stdin is not None and cap.stdout is not None
            ready = _readline(cap.stdout, 60)
            if ready.strip() != "READY":
                raise RuntimeError(f"capture did not start: {ready!r}")
            send = subprocess.Popen(
                ["ip", "netns", "exec", self.ns_a, sys.executable, __file__, "_send", "--ifname", IF_A,
                 "--frames", str(self.frames), "--pps", str(pps), "--seconds", str(seconds),
                 "--cpu", str(self.send_cpu)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert send.stdout is not None
            try:
                if _readline(send.stdout, 120).strip() != "START":
                    raise RuntimeError("the sender did not start")
                cpu0, wall0 = _cpu_ticks(cap.pid), time.monotonic()
                sent = json.loads(_readline(send.stdout, seconds + 120))
                cpu1, wall1 = _cpu_ticks(cap.pid), time.monotonic()
                if send.wait(30) != 0:
                    raise RuntimeError("the sender failed")
            finally:
                if send.poll() is None:
                    send.kill()
                    send.wait()
            st.send_window_cpu_s = (cpu1 - cpu0) / os.sysconf("SC_CLK_TCK")
            st.send_window_s = wall1 - wall0
            time.sleep(drain_s)  # let the capture empty the ring / queue
            cap.stdin.write("stop\n")
            cap.stdin.flush()
            line = _readline(cap.stdout, 60)
            result = json.loads(line)
            cap.wait(30)
        finally:
            if cap.poll() is None:
                cap.kill()
                cap.wait()
        st.sent = sent["sent"]
        st.sent_bytes = sent["sent_bytes"]
        st.send_elapsed_s = sent["elapsed_s"]
        st.sender_cpu_s = sent["cpu_s"]
        st.captured = result["packets"]
        st.kernel_packets = result["kernel_packets"]
        st.kernel_drops = result["kernel_drops"]
        st.kernel_freeze_q = result["kernel_freeze_q"]
        st.capture_cpu_s = result["user_s"] + result["sys_s"]
        st.capture_wall_s = result["wall_s"]
        st.capture = result
        return st


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _readline(stream: Any, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError("no answer from the capture process")
    return str(stream.readline())


def ramp(bench: Bench, method: str, engine: bool, rates: list[int], seconds: float) -> list[Step]:
    steps: list[Step] = []
    for pps in rates:
        load = os.getloadavg()[0]
        st = bench.step(method, engine, pps, seconds)
        for _ in range(RETRIES):
            if st.clean:
                break
            # Other load on the machine (or the hypervisor) can stall the capture process for longer
            # than the ring lasts at these rates: a step must drop every time to count as unclean.
            log(f"  {method:9} target {pps or 'max'}: {st.kernel_drops:,} drops, trying again")
            earlier = [*st.earlier_attempts, st.record()]
            st = bench.step(method, engine, pps, seconds)
            st.earlier_attempts = earlier
        st.loadavg_1min = load
        steps.append(st)
        cpu = st.cpu_pct
        log(
            f"  {method:9} engine={'on ' if engine else 'off'} target {pps or 'max':>8} pps: "
            f"sent {st.achieved_pps:>9,.0f} pps ({st.mbit_s:6.0f} Mbit/s), captured {st.captured:>9,}/"
            f"{st.sent:,}, kernel drops {st.kernel_drops:,}, capture CPU {cpu:.0f}%"
            f"; largest batch {st.capture['max_batch']:,}, slowest feed "
            f"{1000 * st.capture['feed_max_s']:.0f} ms"
            f", longest GC {1000 * st.capture['gc_max_pause_s']:.0f} ms"
        )
        if not st.clean:
            break
        if not pps or st.achieved_pps < 0.95 * pps:
            log("  (the sender could not keep up: stopping this ramp)")
            break
    return steps


def best_clean(steps: list[Step]) -> Step | None:
    clean = [s for s in steps if s.clean]
    return max(clean, key=lambda s: s.achieved_pps) if clean else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    sub = p.add_subparsers(dest="role")
    s = sub.add_parser("_send")
    s.add_argument("--ifname", required=True)
    s.add_argument("--frames", required=True)
    s.add_argument("--pps", type=float, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--cpu", type=int, default=-1)
    c = sub.add_parser("_capture")
    c.add_argument("--ifname", required=True)
    c.add_argument("--method", required=True, choices=("ring", "ring-copy", "recv"))
    c.add_argument("--with-engine", action="store_true")
    c.add_argument("--cpu", type=int, default=-1)
    p.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="ramp, packets/s")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per ramp step (default 5)")
    p.add_argument("--methods", default="ring,ring-copy,recv", help="ring (views), ring-copy, recv")
    p.add_argument("--engine-pps", type=int, default=20_000, help="the 50-camera rate (default 20000)")
    p.add_argument("--engine-seconds", type=float, default=15.0)
    p.add_argument("--no-ramp", action="store_true", help="only the 50-camera engine run")
    p.add_argument("--ramps", default="source,engine", help="which ramps: source (alone), engine (with it)")
    p.add_argument("--json", type=Path, default=OUT_DIR / "live.json")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="check that it runs (CI): one 0.5 s step at 5,000 pps per ramp, 1 s engine runs",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.rates, args.seconds, args.engine_pps, args.engine_seconds = "5000", 0.5, 5_000, 1.0
    if args.role == "_send":
        return send_main(args)
    if args.role == "_capture":
        return capture_main(args)
    return run(args)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        log("benchmarks/live.py needs root (network namespaces, packet sockets)")
        return 2
    if shutil.which("ip") is None:
        log("benchmarks/live.py needs iproute2's `ip`")
        return 2
    methods = [m for m in args.methods.split(",") if m]
    if any(m not in ("ring", "ring-copy", "recv") for m in methods):
        log(f"--methods: ring, ring-copy or recv, not {args.methods}")
        return 2
    rates = [int(r) for r in args.rates.split(",") if r]
    workdir = Path(tempfile.mkdtemp(prefix="camwatch-live-"))
    try:
        return _run_in(args, methods, rates, workdir)
    except KeyboardInterrupt:
        log("interrupted (namespaces deleted)")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_in(args: argparse.Namespace, methods: list[str], rates: list[int], workdir: Path) -> int:
    frames_path = workdir / "frames.bin"  # the sender reads it: the frames are built once
    log("building the traffic (scenario, 50 cameras) ...")
    traffic = build_frames(frames_path)
    log(f"  {traffic['frames']:,} frames, mean {traffic['mean_frame_bytes']} bytes")
    bench = Bench(frames_path, str(os.getpid()))
    load_before = os.getloadavg()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results: dict[str, Any] = {"ramps": {}, "engine_runs": {}}
    try:
        bench.create()
        if not args.no_ramp:
            for engine in [m == "engine" for m in args.ramps.split(",") if m in ("source", "engine")]:
                for method in methods:
                    log(f"ramp: {method}, engine {'on' if engine else 'off'}")
                    steps = ramp(bench, method, engine, rates, args.seconds)
                    results["ramps"][f"{method}{'+engine' if engine else ''}"] = [s.record() for s in steps]
        for method in methods:
            log(
                f"50 cameras with the engine: {method} at {args.engine_pps:,} pps for {args.engine_seconds} s"
            )
            st = bench.step(method, True, args.engine_pps, args.engine_seconds)
            results["engine_runs"][method] = st.record()
            feed = 100 * st.capture["engine_s"] / st.send_window_s
            log(
                f"  CPU {st.cpu_pct:.1f}% (engine.feed {feed:.1f}%), RSS "
                f"{st.capture.get('VmRSS_kib', 0) / 1024:.0f} MiB, kernel drops {st.kernel_drops}, "
                f"{st.capture['batches']:,} batches, {st.capture['flows_ended']:,} flows ended, "
                f"{st.capture['alerts']:,} alerts"
            )
    finally:
        bench.delete()
    doc = {
        "machine": {**_machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "traffic": traffic,
        "parameters": {
            "rates": rates,
            "seconds_per_step": args.seconds,
            "engine_pps": args.engine_pps,
            "engine_seconds": args.engine_seconds,
            "sender_cpu": bench.send_cpu,
            "capture_cpu": bench.capture_cpu,
            "clean": "kernel drops == 0 and captured >= sent",
            "mbit_s": "Ethernet frame bytes (no preamble, FCS or gap) x 8 / send time",
            "cpu": "capture process user+sys (/proc/<pid>/stat) while the sender sent, / that time",
        },
        **results,
    }
    doc["summary"], decision, table = summarise(results)
    doc["decision"] = decision
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(table)
    print()
    print(decision)
    log(f"wrote {args.json}")
    return 0


def summarise(results: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The table and the decision between the ring and recvmsg."""
    summary: dict[str, Any] = {}
    rows = [
        "| source | max zero-drop rate, source only | max zero-drop rate, with engine | "
        "CPU at 50 cameras (engine.feed's share) | RSS at 50 cameras | kernel drops at 50 cameras |",
        "|---|---|---|---|---|---|",
    ]
    for method, run_ in results["engine_runs"].items():
        entry: dict[str, Any] = {}
        cells = [f"`{method}`"]
        for key in (method, f"{method}+engine"):
            steps = results["ramps"].get(key)
            if not steps:
                cells.append("n/a")
                continue
            clean = [s for s in steps if s["clean"]]
            top = max(clean, key=lambda s: s["achieved_pps"]) if clean else None
            ended_clean = steps[-1]["clean"]  # no drops up to what the sender could do
            bad = None if ended_clean else steps[-1]
            entry[key] = {
                "max_clean_pps": top["achieved_pps"] if top else 0,
                "max_clean_mbit_s": top["mbit_s"] if top else 0,
                "sender_limited": ended_clean,  # refined below
                "first_unclean_pps": bad["achieved_pps"] if bad else None,
                "first_unclean_drops": bad["kernel_drops"] if bad else None,
            }
            last = steps[-1]
            at_sender_limit = not last["target_pps"] or last["achieved_pps"] < 0.95 * last["target_pps"]
            entry[key]["sender_limited"] = ended_clean and at_sender_limit
            text = "none" if top is None else f"{top['achieved_pps']:,} pps / {top['mbit_s']:,.0f} Mbit/s"
            if bad is not None:
                text += f" (drops at {bad['achieved_pps']:,} pps)"
            elif at_sender_limit:
                text += " (the sender's limit: no drops seen)"
            else:
                text += " (the highest rate tried: no drops seen)"
            cells.append(text)
        cpu = run_["capture_cpu_pct"]
        wall = run_["send_window_s"] or 1.0
        feed = round(100 * run_["capture"]["engine_s"] / wall, 1)
        rss = run_["capture"].get("VmRSS_kib", 0) / 1024
        hwm = run_["capture"].get("VmHWM_kib", 0) / 1024
        entry["engine_run"] = {"cpu_pct": cpu, "engine_feed_pct": feed, "rss_mib": round(rss, 1),
                               "hwm_mib": round(hwm, 1), "kernel_drops": run_["kernel_drops"],
                               "mbit_s": run_["mbit_s"], "pps": run_["achieved_pps"]}  # fmt: skip
        cells += [f"{cpu}% ({feed}%)", f"{rss:.0f} MiB (peak {hwm:.0f})", str(run_["kernel_drops"])]
        summary[method] = entry
        rows.append("| " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    decision = _decide(summary)
    return summary, decision, table


def _decide(summary: dict[str, Any]) -> str:
    if "ring" not in summary or "recv" not in summary:
        return "decision: needs both ring and recv"
    ring, recv = summary["ring"], summary["recv"]
    cpu_ring = ring["engine_run"]["cpu_pct"] or 0.0
    cpu_recv = recv["engine_run"]["cpu_pct"] or 0.0
    winner = "ring" if cpu_ring <= cpu_recv else "recv"
    parts = []
    if cpu_ring and cpu_recv:
        parts.append(
            f"at 50 cameras with the engine the capture process uses {cpu_ring}% CPU with the ring and "
            f"{cpu_recv}% with recvmsg ({max(cpu_recv, cpu_ring) / min(cpu_ring, cpu_recv):.1f}x)"
        )
    for key, label in (("", "source alone"), ("+engine", "with the engine")):
        a = ring.get("ring" + key, {})
        b = recv.get("recv" + key, {})
        if a.get("max_clean_pps") and b.get("max_clean_pps"):
            bound = ">= " if a["sender_limited"] and not b["sender_limited"] else ""
            parts.append(
                f"highest zero-drop rate {label}: ring {a['max_clean_pps']:,} pps"
                f"{' (the sender' + chr(39) + 's limit)' if a['sender_limited'] else ''}, recvmsg "
                f"{b['max_clean_pps']:,} pps ({bound}{a['max_clean_pps'] / b['max_clean_pps']:.1f}x)"
            )
    copy = summary.get("ring-copy", {}).get("engine_run")
    if copy:
        parts.append(
            f"copying each block out of the ring costs {copy['cpu_pct']}% vs {cpu_ring}% for views "
            f"(RSS {copy['rss_mib']:.0f} vs {ring['engine_run']['rss_mib']:.0f} MiB)"
        )
    return f"decision: {winner} wins: " + "; ".join(parts) + "."


def _machine() -> dict[str, Any]:
    import numpy

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "tcpreplay": shutil.which("tcpreplay") is not None,
    }


if __name__ == "__main__":
    sys.exit(main())
