#!/usr/bin/python3
"""Several devices, one offload server: load-blind against server-aware
offloading (eenn-device --server_aware), side by side, paired repetitions.

The default setting is small edge devices sharing a small server tier: the
--devices eenn-device daemons (1 LibTorch thread each, each limited to
--device_cpu_share of a core, 0.2, by its own cgroup v1 cpu quota over the
shortest period the kernel allows) share CPU --device_cpus (default 0); one
eenn-server (1 thread, --server_max_batch, default 1) runs on CPU
--server_cpus (default 1) limited to --server_cpu_share of it (0.25); the
clients run on --client_cpus (default 1, what the server's quota leaves).
Quotas need root (0: no limit). The devices together offer --load_x (1.2)
times what the server serves, and could serve it all themselves. Every
device splits early (--split, default 4: no device exit runs before it), so
each request is offloaded unless the device declines to and finishes it
itself:

  1. calibration: eenn-bench-server drives the server with split tensors from
     --devices x --workers callers; its throughput is the server tier's
     capacity C (samples/s). The devices, started without a server, are
     driven closed loop; their total throughput is the edge tier's capacity L;
  2. each repetition runs both modes one after the other (their order
     alternates), fresh devices each time, on the same Poisson arrivals: every
     device gets --load_x * C / --devices requests per second for
     --duration_s, each with a --deadline_ms deadline;
  3. per run: the end-to-end latency percentiles over every arrival (a request
     refused or past its deadline counts as later than any), answered share,
     misses, decisions (server / device / fallback by reason), accuracy, and
     the server-aware gate's estimates (sampled from the devices' metrics).

Load-blind devices offload everything: the server's queue grows until
offloads time out; each timed-out offload held a device worker for up to half
of its request's remaining time before the device finished it locally, and
the requests behind it waited in the device's queue; a device that saw a
timeout treats the server as down until its next probe. Server-aware devices
offload while the server's expected answer (its reported and measured load)
comes sooner than they would finish the request themselves and fits the
request's budget, and finish the rest locally at once.

Prints a table of medians (--json: one JSON object) and, with --out, writes
every client's summary and results there.

    tools/bench/server_aware_compare.py
    tools/bench/server_aware_compare.py --devices 4 --load_x 1.4 --deadline_ms 100 --reps 3   # heavier
    tools/bench/server_aware_compare.py --device_cpu_share 0 --server_cpu_share 0.3 --load_x 1.5
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import BIN, ROOT, CpuQuota, in_parallel, log, metric, metrics, run_client, start, stop_all  # noqa: E402


def run_clients(ports, images, extra_for, tmp, tag, prefix=()):
    """One eenn-client per device at once; returns their summaries and result lines."""
    def one(i):
        results = os.path.join(tmp, f"{tag}-d{i}.jsonl")
        summary = run_client(f"127.0.0.1:{ports[i]}", images, extra_for(i), results, prefix)
        with open(results) as f:
            return summary, [json.loads(line) for line in f if line.startswith("{")]

    return in_parallel([lambda i=i: one(i) for i in range(len(ports))])


class GaugeSampler:
    """Samples the devices' server-aware gauges (expected round trip, its
    part outside the server's queue, the local finish) every 0.5 s while a
    run lasts (one scrape per device); stop() returns their medians in ms."""
    NAMES = {"expected_rtt": "eenn_device_server_expected_rtt_seconds",
             "base_rtt": "eenn_device_server_base_rtt_seconds",
             "local_finish": "eenn_device_local_finish_seconds"}

    def __init__(self, ports):
        self.ports, self.values, self.done = ports, {k: [] for k in self.NAMES}, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.done.wait(0.5):
            for port in self.ports:
                found = metrics(port, self.NAMES.values())
                for key, name in self.NAMES.items():
                    if name in found:
                        self.values[key].append(1000 * found[name])

    def stop(self):
        self.done.set()
        self.thread.join()
        return {k: round(statistics.median(v), 2) if v else None for k, v in self.values.items()}


def percentile(sorted_values, q):
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def summarize(per_device, deadline_ms):
    arrivals = answered = missed = rejected = failed = labelled = correct = 0
    decided = {"device": 0, "server": 0, "fallback": 0}
    reasons = {}
    latencies = []
    for summary, lines in per_device:
        arrivals += summary["arrivals"]
        answered += summary["answered"]
        missed += summary["missed"]
        rejected += summary["rejected"]
        failed += summary["failed"]
        labelled += summary.get("labelled", 0)
        correct += round(summary.get("accuracy", 0) * summary.get("labelled", 0))
        for k in decided:
            decided[k] += summary["decided"].get(k, 0)
        answered_latency = [r["latency_ms"] for r in lines if "latency_ms" in r]
        latencies += answered_latency
        for r in lines:
            if r.get("decided") == "fallback":
                why = r.get("fallback_reason", "")
                key = "busy" if why.startswith("UNAVAILABLE: server busy") else why.split(":", 1)[0].lower()
                reasons[key] = reasons.get(key, 0) + 1
    # Every arrival not answered within its deadline counts as infinitely late.
    late = [math.inf] * (arrivals - len(latencies))
    everything = sorted(latencies + late)
    answered_sorted = sorted(latencies)
    return {
        "arrivals": arrivals, "answered": answered, "missed": missed, "rejected": rejected, "failed": failed,
        "within_deadline": sum(1 for v in latencies if v <= deadline_ms),
        "p50_ms": percentile(everything, 0.50), "p99_ms": percentile(everything, 0.99),
        "answered_p99_ms": percentile(answered_sorted, 0.99),
        "miss_ratio": (arrivals - sum(1 for v in latencies if v <= deadline_ms)) / max(1, arrivals),
        "accuracy": correct / labelled if labelled else None,
        "decided": decided, "fallback_reasons": reasons,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=os.path.join(ROOT, "models", "cifar10-resnet18"))
    ap.add_argument("--images", default=os.path.join(ROOT, "..", "shared", "datasets", "cifar10", "test"))
    ap.add_argument("--limit", type=int, default=2000, help="images each client cycles through")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--split", type=int, default=4)
    ap.add_argument("--encoding", default="int8")
    ap.add_argument("--workers", type=int, default=2, help="eenn-device --workers")
    ap.add_argument("--server_max_batch", type=int, default=1,
                    help="eenn-server --max_batch_size (1: a server tier that saturates before the devices do)")
    ap.add_argument("--server_cpu_share", type=float, default=0.25,
                    help="CPU time the server may use, in cores (a cgroup v1 cpu quota; needs root; 0: no limit)")
    ap.add_argument("--device_cpu_share", type=float, default=0.2,
                    help="CPU time each device may use, in cores (its own cgroup v1 cpu quota; needs root; "
                         "0: no limit)")
    ap.add_argument("--server_cpu_period_us", type=int, default=0,
                    help="period of that quota (0: the shortest the kernel allows, a 1 ms quota, so that a "
                         "throttled server stalls for a few milliseconds at most)")
    ap.add_argument("--server_cpus", default="1", help="taskset CPU list of the server ('' : any)")
    ap.add_argument("--device_cpus", default="0", help="taskset CPU list of the devices ('' : any)")
    ap.add_argument("--client_cpus", default="1",
                    help="taskset CPU list of the clients and of eenn-bench-server ('' : any); by default the "
                         "server's CPU, which its quota leaves mostly free")
    ap.add_argument("--deadline_ms", type=int, default=100)
    ap.add_argument("--duration_s", type=float, default=15)
    ap.add_argument("--load_x", type=float, default=1.2, help="offered load over the server tier's capacity")
    ap.add_argument("--rate", type=float, default=0, help="per-device arrival rate (skips calibration)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default="")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    tmp = a.out or tempfile.mkdtemp(prefix="eenn-server-aware-")
    os.makedirs(tmp, exist_ok=True)
    images = os.path.join(tmp, "images")
    if not os.path.isdir(images):
        # --limit images of the split, as links in their class folders.
        files = []
        for label in sorted(os.listdir(a.images)):
            for f in sorted(os.listdir(os.path.join(a.images, label))):
                files.append((label, f))
        step = max(1, len(files) // a.limit)
        for label, f in files[::step][: a.limit]:
            os.makedirs(os.path.join(images, label), exist_ok=True)
            os.symlink(os.path.join(a.images, label, f), os.path.join(images, label, f))

    server_pin = ["taskset", "-c", a.server_cpus] if a.server_cpus else []
    quota = None
    if a.server_cpu_share > 0:
        quota = CpuQuota(a.server_cpu_share, "eenn-server-aware", a.server_cpu_period_us)
        server_pin = quota.prefix + server_pin
    device_pin = ["taskset", "-c", a.device_cpus] if a.device_cpus else []
    client_pin = ["taskset", "-c", a.client_cpus] if a.client_cpus else []
    device_quotas = [CpuQuota(a.device_cpu_share, f"eenn-server-aware-device{i}") if a.device_cpu_share > 0 else None
                     for i in range(a.devices)]
    server, sready = start("eenn-server", [f"--bundle={a.bundle}", "--listen=127.0.0.1:0",
                                           "--metrics_address=127.0.0.1:0", "--plaintext", "--threads=1",
                                           f"--max_batch_size={a.server_max_batch}"],
                           tmp, "server", prefix=server_pin)
    server_addr = f"127.0.0.1:{sready['grpc_port']}"
    procs = []

    def start_devices(aware, tag, with_server=True):
        ds = []
        for i in range(a.devices):
            server_flags = ["--server_plaintext", f"--server={server_addr}"] if with_server else []
            p, r = start("eenn-device", [f"--bundle={a.bundle}", "--listen=127.0.0.1:0",
                                         "--metrics_address=127.0.0.1:0", "--plaintext"] + server_flags +
                         [f"--split={a.split}", f"--encoding={a.encoding}", "--threads=1", f"--workers={a.workers}",
                          f"--server_aware={'true' if aware else 'false'}"],
                         tmp, f"{tag}-device{i}",
                         prefix=(device_quotas[i].prefix if device_quotas[i] else []) + device_pin)
            procs.append(p)
            ds.append((p, r))
        return ds

    def stop(ds):
        stop_all([p for p, _ in ds])

    where = (f"server limited to {a.server_cpu_share:g} core" if a.server_cpu_share > 0 else "server unlimited") + \
        (f"; each device limited to {a.device_cpu_share:g} core" if a.device_cpu_share > 0 else "") + \
        (f", on CPUs {a.server_cpus}" if a.server_cpus else "") + \
        (f"; devices on CPUs {a.device_cpus}" if a.device_cpus else "") + \
        (f"; clients on CPUs {a.client_cpus}" if a.client_cpus else "")
    try:
        rate = a.rate
        if rate <= 0:
            # The server tier's capacity: eenn-bench-server offers it split
            # tensors from as many callers as the devices have workers.
            cmd = client_pin + [os.path.join(BIN, "eenn-bench-server"), "--plaintext", f"--server={server_addr}",
                                f"--bundle={a.bundle}", f"--images={images}", f"--split={a.split}",
                                f"--encoding={a.encoding}", f"--concurrency={a.devices * a.workers}",
                                "--seconds=5", "--warmup_s=2"]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit("eenn-bench-server: " + p.stdout + p.stderr)
            capacity = json.loads(p.stdout.strip().splitlines()[-1])["levels"][0]["samples_per_s"]
            rate = a.load_x * capacity / a.devices
            log(f"server tier capacity {capacity:.0f} samples/s (eenn-bench-server, {a.devices * a.workers} callers); "
                f"offering {a.load_x} x that: {rate:.1f} requests/s per device")
        else:
            capacity = None
        # The edge tier's capacity: the devices alone (no server), closed loop,
        # as many requests in flight as each has workers.
        ds = start_devices(False, "edge-capacity", with_server=False)
        ports = [r["grpc_port"] for _, r in ds]
        run_clients(ports, images, lambda i: ["--concurrency=1", "--limit=20"], tmp, "edge-warm", client_pin)
        res = run_clients(ports, images, lambda i: [f"--concurrency={a.workers}", "--duration_s=5"], tmp,
                          "edge-capacity", client_pin)
        edge_capacity = sum(s["answered"] / s["wall_s"] for s, _ in res)
        stop(ds)
        log(f"edge tier capacity {edge_capacity:.0f} samples/s ({a.devices} devices alone, closed loop); "
            f"offered {rate * a.devices:.0f}/s in all")
        runs = {"blind": [], "aware": []}
        for rep in range(a.reps):
            order = ["blind", "aware"] if rep % 2 == 0 else ["aware", "blind"]
            for mode in order:
                ds = start_devices(mode == "aware", f"r{rep}-{mode}")
                ports = [r["grpc_port"] for _, r in ds]
                run_clients(ports, images, lambda i: ["--concurrency=1", "--limit=20"], tmp, f"r{rep}-{mode}-warm",
                            client_pin)
                time.sleep(1)
                sampler = GaugeSampler([r["metrics_port"] for _, r in ds])
                res = run_clients(
                    ports, images,
                    lambda i: [f"--arrivals=poisson:{rate:.3f}", f"--duration_s={a.duration_s}",
                               f"--deadline_ms={a.deadline_ms}", f"--seed={100 + i + 10 * rep}",
                               f"--limit={a.limit}", "--window_s=1"],
                    tmp, f"r{rep}-{mode}", client_pin)
                gauges = sampler.stop()
                s = summarize(res, a.deadline_ms)
                s["gauges_median_ms"] = gauges
                s["busy_declines"] = sum(metric(r["metrics_port"], 'eenn_device_fallbacks_total{reason="busy"}') or 0
                                         for _, r in ds)
                runs[mode].append(s)
                log(f"rep {rep} {mode:5s}: p99 {s['p99_ms']:.1f} ms, miss ratio {s['miss_ratio']:.4f}, "
                    f"decided {s['decided']}, fallbacks {s['fallback_reasons']}; gate estimates (medians over "
                    f"devices and time, ms): {gauges}")
                stop(ds)
                time.sleep(2)  # the server's queue drains
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        stop_all([server])
        for q in [quota] + device_quotas:
            if q:
                q.remove()

    def med(mode, key):
        vals = [r[key] for r in runs[mode] if r[key] is not None]
        return statistics.median(vals) if vals else None

    report = {
        "devices": a.devices, "split": a.split, "encoding": a.encoding, "deadline_ms": a.deadline_ms,
        "duration_s": a.duration_s, "server_cpu_share": a.server_cpu_share, "server_cpus": a.server_cpus,
        "device_cpus": a.device_cpus, "client_cpus": a.client_cpus, "device_cpu_share": a.device_cpu_share, "server_max_batch": a.server_max_batch,
        "capacity_samples_per_s": capacity, "edge_capacity_samples_per_s": edge_capacity, "load_x": a.load_x if capacity else None,
        "rate_per_device": rate, "reps": a.reps, "runs": runs,
        "median": {m: {k: med(m, k) for k in ("p50_ms", "p99_ms", "answered_p99_ms", "miss_ratio", "accuracy",
                                              "busy_declines")} for m in runs},
    }
    if a.json:
        print(json.dumps(report, indent=1, default=lambda x: None))
    else:
        print(f"{a.devices} devices (split {a.split}, {a.encoding}), one eenn-server ({where}); "
              f"Poisson {rate:.1f}/s per device"
              + (f" = {a.load_x} x the server tier's capacity ({capacity:.0f}/s)" if capacity else "")
              + f"; the devices alone serve {edge_capacity:.0f}/s"
              + f"; deadline {a.deadline_ms} ms; {a.duration_s:g} s; medians of {a.reps} paired runs")
        print("| offloading | p50 (ms) | p99 (ms) | p99 of answered (ms) | past deadline | accuracy | busy declines |")
        print("|---|---|---|---|---|---|---|")
        for m, name in (("blind", "load-blind"), ("aware", "server-aware")):
            r = report["median"][m]
            fmt = lambda v: "never" if v is None or v == math.inf else f"{v:.1f}"  # noqa: E731
            acc = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
            print(f"| {name} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['answered_p99_ms'])} | "
                  f"{100 * r['miss_ratio']:.2f}% | {acc} | {r['busy_declines']:.0f} |")
    if not a.out:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
