#!/usr/bin/python3
"""Fixed thresholds against load-aware exits (eenn-device --loss_target) on
the same bursty arrival trace, side by side.

Starts two eenn-device daemons on loopback (plaintext, LibTorch 1 thread,
the same --workers/--queue_capacity, no offload server unless --server, so
requests no device exit takes finish locally): "fixed" serves the bundle's
calibrated thresholds at its default split, "adaptive" runs the load
controller over the bundle's configs.json. Both get the same open-loop trace,
one after the other, each device alone on CPU 0 with its client on CPU 1
(--at_once: both at the same time, sharing the machine's cores):

  1. warm-up of both, then the fixed device's capacity in a closed loop
     with workers + 2 requests in flight (with --at_once, both devices busy
     at once): answers per second by the mean gap between answers, the mean
     of two passes after a warm-up pass;
  2. the trace: --cycles times --calm_s at --calm_x times that capacity, then
     --burst_s at --burst_x times it (evenly spaced arrivals); one device at
     a time, the fixed device runs it first, and when its loss ratio is
     outside --fixed_loss (5-15%: the machine ran faster or slower than while
     its capacity was measured), the trace is made again for the capacity
     that loss shows (at most twice), so the comparison is made at a known
     overload;
  3. per device: loss ratio (refused for a full queue, plus deadline misses)
     and accuracy of the answered requests (folder names are the labels), in
     total and per --window_s; the adaptive device's configuration index,
     predicted loss ratio, arrival-rate estimate and queue depth are sampled
     from its metrics every 0.2 s (configs_sampled.csv).

Prints a table (--json: one JSON object) and writes, under --out, the trace,
both clients' per-window CSVs, the configuration samples and plot.svg (per
window loss ratio and accuracy of both, and the configuration in use).

    tools/bench/load_control_compare.py
    tools/bench/load_control_compare.py --cycles 6 --burst_x 2 --out /tmp/ceed
    tools/bench/load_control_compare.py --at_once --queue_capacity 8
    tools/bench/load_control_compare.py --device_cpu_share 0.2   # slower devices (cgroup quota, root)
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import ROOT, CpuQuota, in_parallel, log, metric, metrics, run_client, start, stop_all  # noqa: E402
BUNDLE = os.path.join(ROOT, "models", "cifar10-resnet18")
# The adaptive device's state, sampled every 0.2 s during the trace.
SAMPLED = ["eenn_device_exit_config", "eenn_device_predicted_loss_ratio", "eenn_device_arrival_rate",
           "eenn_device_queue_depth"]


CLIENT_PREFIX = []


def client(port, images, extra):
    return run_client(f"127.0.0.1:{port}", images, extra, prefix=CLIENT_PREFIX)



def svg_plot(path, windows_a, windows_b, samples, duration):
    w, h, pad = 900, 520, 50
    panels = [("loss ratio", "loss_ratio", 0, 1), ("accuracy", "accuracy", 0, 1)]
    ph = (h - 3 * pad) / 3
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12"><rect width="{w}" height="{h}" fill="white"/>']

    def x(t):
        return pad + (w - 2 * pad) * t / max(duration, 1e-9)

    def panel(i, title, series, lo, hi):
        top = pad / 2 + i * (ph + pad / 2)
        out.append(f'<rect x="{pad}" y="{top}" width="{w - 2 * pad}" height="{ph}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{pad}" y="{top - 4}">{title}</text>')
        out.append(f'<text x="{pad - 30}" y="{top + 10}">{hi:g}</text><text x="{pad - 30}" y="{top + ph}">{lo:g}</text>')
        for pts, color, label, k in series:
            if not pts:
                continue
            d = " ".join(f"{x(t):.1f},{top + ph - ph * (min(max(v, lo), hi) - lo) / (hi - lo):.1f}" for t, v in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
            out.append(f'<text x="{w - pad - 160}" y="{top + 14 + 14 * k}" fill="{color}">{label}</text>')

    def pts(windows, key):
        return [((wd["start_s"] + wd["end_s"]) / 2, wd[key]) for wd in windows
                if wd.get(key) is not None and wd["arrivals"] > 0]

    for i, (title, key, lo, hi) in enumerate(panels):
        panel(i, title, [(pts(windows_a, key), "#c0392b", "fixed thresholds", 0),
                         (pts(windows_b, key), "#2471a3", "load-aware", 1)], lo, hi)
    top_config = max([v for _, v in samples] + [1])
    panel(2, "configuration in use (0 = most accurate)", [(samples, "#2471a3", "load-aware", 0)], 0, top_config)
    out.append(f'<text x="{w / 2}" y="{h - 8}">time, s</text></svg>')
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=os.path.join(ROOT, "..", "shared", "datasets", "cifar10", "test"))
    ap.add_argument("--per_class", type=int, default=20,
                    help="images per class folder (the client sends them class by class: few per class keeps "
                         "every window balanced)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--queue_capacity", type=int, default=32)
    ap.add_argument("--loss_target", type=float, default=0.03)
    ap.add_argument("--control_interval_ms", type=int, default=100)
    ap.add_argument("--control_dwell_ms", type=int, default=1000, help="eenn-device --control_dwell_ms")
    ap.add_argument("--device_flags", default="", help="more eenn-device flags for the adaptive device")
    ap.add_argument("--calm_x", type=float, default=0.3)
    ap.add_argument("--burst_x", type=float, default=1.15)
    ap.add_argument("--calm_s", type=float, default=4)
    ap.add_argument("--burst_s", type=float, default=3)
    ap.add_argument("--cycles", type=int, default=4)
    ap.add_argument("--window_s", type=float, default=1)
    ap.add_argument("--fixed_loss", default="0.05,0.15",
                    help="the fixed device's loss ratio range the comparison is made at (one device at a time): "
                         "outside it, the trace is made again for the capacity that loss shows, at most twice")
    ap.add_argument("--server", action="store_true", help="offload to an eenn-server (both devices)")
    ap.add_argument("--out", default="", help="keep the trace, CSVs and plot here")
    ap.add_argument("--device_cpu_share", type=float, default=0,
                    help="limit each device to this share of a core (a cgroup v1 cpu quota, needs root; "
                         "0: no limit): a slower device, whose service time dwarfs the clients' own work")
    ap.add_argument("--device_cpus", default="",
                    help="taskset CPU list of both devices ('': any). Both on one core they compete for it "
                         "(what the adaptive device saves, the fixed one gets): measured that way the controller "
                         "cut nothing (0.6-1.1x in three runs); add --device_cpu_share to cap each")
    ap.add_argument("--client_cpus", default="", help="taskset CPU list of the clients and the server ('': any)")
    ap.add_argument("--at_once", action="store_true",
                    help="run both devices and their clients at the same time on this machine (they then share its "
                         "cores: what one saves, the other gets)")
    ap.add_argument("--sequential", action="store_true",
                    help="(the default) the two devices one after the other on the same trace, each alone on CPU 0 "
                         "with the client (and server) on CPU 1 unless --device_cpus/--client_cpus say otherwise: "
                         "neither device's speed then depends on how hard the other works")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    a.sequential = not a.at_once
    if a.sequential and (os.cpu_count() or 1) >= 2:
        a.device_cpus = a.device_cpus or "0"
        a.client_cpus = a.client_cpus or "1"
    device_pin = ["taskset", "-c", a.device_cpus] if a.device_cpus else []
    client_pin = ["taskset", "-c", a.client_cpus] if a.client_cpus else []
    CLIENT_PREFIX[:] = client_pin

    tmp = tempfile.mkdtemp(prefix="eenn_ceed_")
    out_dir = a.out or tmp
    os.makedirs(out_dir, exist_ok=True)
    images = os.path.join(tmp, "images")
    for cls in sorted(os.listdir(a.images)):
        src = os.path.join(a.images, cls)
        if not os.path.isdir(src):
            continue
        os.makedirs(os.path.join(images, cls))
        for f in sorted(os.listdir(src))[:a.per_class]:
            shutil.copy(os.path.join(src, f), os.path.join(images, cls, f))
    procs, quotas = [], []
    try:
        def device_prefix(name):
            if a.device_cpu_share <= 0:
                return device_pin
            quotas.append(CpuQuota(a.device_cpu_share, f"eenn-ceed-{name}"))
            return quotas[-1].prefix + device_pin

        common = [f"--bundle={BUNDLE}", "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0", "--plaintext",
                  "--threads=1", f"--workers={a.workers}", f"--queue_capacity={a.queue_capacity}"]
        if a.server:
            p, srv = start("eenn-server", [f"--bundle={BUNDLE}", "--listen=127.0.0.1:0", "--metrics_address=",
                                           "--plaintext", "--threads=1"], tmp, "server", prefix=client_pin)
            procs.append(p)
            common += [f"--server=127.0.0.1:{srv['grpc_port']}", "--server_plaintext"]
        def start_fixed():
            p, ready = start("eenn-device", common, tmp, "fixed", prefix=device_prefix("fixed"))
            procs.append(p)
            return p, ready

        def start_adaptive():
            p, ready = start("eenn-device", common + [f"--loss_target={a.loss_target}",
                                                      f"--control_interval_ms={a.control_interval_ms}",
                                                      f"--control_dwell_ms={a.control_dwell_ms}"]
                             + a.device_flags.split(),
                             tmp, "adaptive", prefix=device_prefix("adaptive"))
            procs.append(p)
            return p, ready

        def warm(dev):
            return client(dev["grpc_port"], images, [f"--concurrency={a.workers + 2}"])

        fixed_proc, fixed = start_fixed()
        passes = []
        if a.sequential:
            for _ in range(3):
                passes.append(warm(fixed))
        else:
            _, adaptive = start_adaptive()
            for _ in range(3):
                passes.append(in_parallel([lambda: warm(fixed), lambda: warm(adaptive)])[0])
        # The fixed device's capacity: answers per second while it is saturated
        # (the mean gap between consecutive answers, which leaves out the
        # client's start and the last requests' drain that a pass's wall time
        # includes), the mean of the last two passes (the first warms up).
        rates = sorted(1000.0 / p["answer_gap_ms"]["mean"] for p in passes[1:])
        capacity = rates[len(rates) // 2] if len(rates) % 2 else 0.5 * (rates[0] + rates[1])
        service_ms = a.workers * 1000.0 / capacity
        trace = os.path.join(out_dir, "trace.csv")
        duration = a.cycles * (a.calm_s + a.burst_s)

        def make_trace(capacity):
            t, rid, lines, in_bursts = 0.0, 0, ["id,time"], 0
            for _ in range(a.cycles):
                for dur, x in ((a.calm_s, a.calm_x), (a.burst_s, a.burst_x)):
                    rate, end = capacity * x, t + dur
                    while t < end - 1e-9:
                        lines.append(f"{rid},{t:.6f}")
                        rid += 1
                        in_bursts += x == a.burst_x
                        t += 1.0 / rate
                    t = end
            with open(trace, "w") as f:
                f.write("\n".join(lines) + "\n")
            log(f"capacity {capacity:.1f}/s ({a.workers * 1000.0 / capacity:.3f} ms per request and worker); "
                f"{rid} arrivals over {duration:.0f} s")
            return in_bursts / rid

        burst_share = make_trace(capacity)
        flags = [f"--arrivals=trace:{trace}", f"--window_s={a.window_s}", "--deadline_ms=60000"]

        def run_trace(dev, name):
            return client(dev["grpc_port"], images, flags + ["--windows_csv=" + os.path.join(out_dir,
                                                                                              f"{name}_windows.csv")])

        retraces = []
        if a.sequential:
            ra = run_trace(fixed, "fixed")
            # The load the comparison is made at: the fixed device's own loss on
            # the trace. Outside --fixed_loss (the machine ran faster or slower
            # than during the capacity measurement, so the bursts were not
            # --burst_x times what it served), the capacity it showed is taken
            # from that loss (bursts lose 1 - capacity / burst rate) and the
            # trace is made again, at most twice.
            lo, hi = (float(v) for v in a.fixed_loss.split(","))
            while not lo <= ra["loss_ratio"] <= hi and len(retraces) < 2:
                shown = capacity * a.burst_x * (1 - ra["loss_ratio"] / burst_share)
                retraces.append({"capacity_rps": capacity, "fixed_loss_ratio": ra["loss_ratio"]})
                capacity = shown if ra["loss_ratio"] > 0 else capacity * 1.1
                burst_share = make_trace(capacity)
                ra = run_trace(fixed, "fixed")
            service_ms = a.workers * 1000.0 / capacity
            stop_all([fixed_proc], timeout_s=20)
            procs.remove(fixed_proc)
            _, adaptive = start_adaptive()
            for _ in range(2):
                warm(adaptive)
        samples, stop = [], threading.Event()

        def sample():
            t0 = time.time()
            while not stop.is_set():
                m = metrics(adaptive["metrics_port"], SAMPLED)
                if SAMPLED[0] in m:
                    samples.append((time.time() - t0, m[SAMPLED[0]], m.get(SAMPLED[1], 0.0), m.get(SAMPLED[2], 0.0),
                                    m.get(SAMPLED[3], 0.0)))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        if a.sequential:
            rb = run_trace(adaptive, "adaptive")
        else:
            ra, rb = in_parallel([lambda: run_trace(fixed, "fixed"), lambda: run_trace(adaptive, "adaptive")])
        stop.set()
        sampler.join()
        changes = metric(adaptive["metrics_port"], "eenn_device_exit_config_changes_total")
        with open(os.path.join(out_dir, "configs_sampled.csv"), "w") as f:
            f.write("t_s,config,predicted_loss,arrival_rate,queue_depth\n" +
                    "".join(f"{t:.2f},{v:.0f},{p:.4f},{r:.1f},{q:.0f}\n" for t, v, p, r, q in samples))
        svg_plot(os.path.join(out_dir, "plot.svg"), ra["windows"], rb["windows"], [(t, v) for t, v, *_ in samples], duration)
        la, lb = ra["loss_ratio"], rb["loss_ratio"]
        aa, ab = ra["totals"]["accuracy"], rb["totals"]["accuracy"]
        summary = {
            "capacity_rps": capacity, "capacity_passes_rps": rates, "retraces": retraces,
            "pass_throughput_rps": [p["throughput_rps"] for p in passes],
            "service_ms_per_worker": service_ms, "arrivals": ra["arrivals"],
            "load_avg_1m": os.getloadavg()[0], "device_cpu_share": a.device_cpu_share,
            "device_cpus": a.device_cpus, "client_cpus": a.client_cpus, "sequential": a.sequential,
            "fixed": {"loss_ratio": la, "accuracy": aa, "rejected": ra["rejected"], "answered": ra["answered"]},
            "adaptive": {"loss_ratio": lb, "accuracy": ab, "rejected": rb["rejected"], "answered": rb["answered"],
                         "config_changes": changes},
            "loss_reduction_x": (la / lb) if lb > 0 else None,
            "accuracy_cost_points": 100 * (aa - ab) if aa is not None and ab is not None else None,
            "out": out_dir,
        }
        if a.json:
            print(json.dumps(summary))
        else:
            print(f"capacity {capacity:.1f}/s (the fixed device saturated), {ra['arrivals']} arrivals, "
                  f"load average {summary['load_avg_1m']:.2f}")
            print("device   | loss ratio | accuracy | answered")
            print(f"fixed    | {la:10.4f} | {100 * aa:7.2f}% | {ra['answered']}")
            print(f"adaptive | {lb:10.4f} | {100 * ab:7.2f}% | {rb['answered']}  ({changes:.0f} changes)")
            red = summary["loss_reduction_x"]
            print(f"loss ratio {'/ %.1f' % red if red else 'to 0'}, accuracy cost "
                  f"{summary['accuracy_cost_points']:.2f} points; files in {out_dir}")
    finally:
        stop_all(procs, timeout_s=20)
        for q in quotas:
            q.remove()
        if not a.out:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(images, ignore_errors=True)


if __name__ == "__main__":
    main()
