#!/usr/bin/python3
"""Checks the finite-queue loss predictor (eenn-queue, common/queueing.h)
against an eenn-device measured under open-loop Poisson load.

Starts eenn-server and eenn-device on loopback (plaintext, LibTorch 1 thread
each, the device with --workers/--queue_capacity and --split at the last
layer, so every request is decided on the device and the device's worker is
the only queue: the server stays connected but idle), then:

  1. warm-up, then a closed-loop run at concurrency 1 (no queueing) that
     measures the device's service time per request (reply timings total_us -
     queue_us: decode, preprocess, layers and exits): its mean sets the
     capacity (workers / mean) that the rates are multiples of;
  2. for each rate: a short closed-loop calibration at concurrency 1 right
     before (--recalibrate_s), whose service-time mean and second moment give
     the prediction "pred(cal)"; a closed-loop run at concurrency workers + 2
     (the device always busy, never full) whose gaps between answers give
     the mean and SCV of the service time as the queue sees it (with the
     reply hand-off and the gRPC threads competing for the cores, which the
     reply timings leave out): the prediction "pred(sat)"; the same gaps per
     --regime_requests consecutive answers give the service speed's drift as regimes
     (eenn-client answer_gap_ms.regimes_ms), whose averaged loss
     (common/queueing.h, SolveSlowlyVarying) is "pred(drift)", the one the
     acceptance check uses; then open-loop Poisson arrivals (eenn-client
     --arrivals poisson:RATE) for --duration_s with a deadline long enough
     that nothing times out, so every loss is a RESOURCE_EXHAUSTED refusal of
     a full queue; the service-time moments measured during that run give
     "pred(run)" (on a machine whose cores are shared the service time drifts
     with the other load, and grows with the client's own sending);
  3. predictions by eenn-queue (M/G/1/K embedded chain for one worker,
     M/PH/c/K beyond), relative errors against the measured rejected /
     arrivals, and the 1-minute load average of the machine at each row;
  4. with one worker, the same with the arrivals' own work on the device's
     core (common/queueing.h, arrival_work_s): each arrival during a service
     takes the worker's busy time less its CPU time over the arrivals while
     it was busy (eenn_device_worker_cpu_seconds_total,
     eenn_device_arrivals_while_busy_total) from that service. "pred(work)":
     from the run (S0 = the service without that work, from the busy time and
     the timings' variance); "pred(work,drift)": with the in-run regimes;
     "pred(work,fcst)": a forecast from the closed loops before the run alone
     (S0 from the busy time at concurrency 1, the work per arrival from the
     saturated loop).

Prints a table (and --json: one JSON object). Needs a build (build/bin).

    tools/bench/queue_validation.py
    tools/bench/queue_validation.py --rates 0.7,0.9,1.1,1.5,2 --duration_s 40 --json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import BIN, ROOT, log, metrics, run_client, start  # noqa: E402

BUSY = "eenn_device_worker_busy_seconds_total"
CPU = "eenn_device_worker_cpu_seconds_total"
WHILE_BUSY = "eenn_device_arrivals_while_busy_total"
TAKEN = 'eenn_device_stage_duration_seconds_count{stage="queue"}'
COUNTERS = [BUSY, CPU, WHILE_BUSY, TAKEN]


def arrival_work(before, after):
    """The work each arrival took from a service in progress (ms) between two
    scrapes of the device: the workers' busy time less their own CPU time, over
    the arrivals while they were busy; and the busy time per request (ms)."""
    taken = after[TAKEN] - before[TAKEN]
    busy = after[BUSY] - before[BUSY]
    seen = after[WHILE_BUSY] - before[WHILE_BUSY]
    work_ms = 1000 * max(0.0, busy - (after[CPU] - before[CPU])) / seen if seen > 0 else 0.0
    return work_ms, (1000 * busy / taken if taken > 0 else 0.0)


def without_work(mean_ms, var_ms2, rate, work_ms):
    """The service S0 without the arrivals' work from the mean and variance of
    the service with it (common/queueing.h): E[S] = E[S0] / (1 - mu) and
    Var[S] = Var[S0] / (1 - mu)^2 + w^2 lambda E[S0] / (1 - mu)^3, where mu =
    lambda w (w: the work per arrival; the arrivals per service are Borel-Tanner
    over Poisson(lambda S0)). Returns (mean, SCV) of S0."""
    lam = rate / 1000.0  # per ms
    mu = lam * work_ms
    if mu >= 1:
        return mean_ms, var_ms2 / mean_ms ** 2
    m0 = mean_ms * (1 - mu)
    v0 = max(0.0, (1 - mu) ** 2 * (var_ms2 - work_ms ** 2 * lam * m0 / (1 - mu) ** 3))
    return m0, v0 / m0 ** 2


CLIENT_PREFIX = []


CLIENT_ARGS = []


def client(device, images, *extra):
    return run_client(device, images, tuple(CLIENT_ARGS) + extra, prefix=CLIENT_PREFIX)


def predict(rates, mean_ms, m2, workers, queue, regimes_ms=None, regimes_scv=None, samples_file=None, work_ms=0.0):
    cmd = [os.path.join(BIN, "eenn-queue"), "--json", "--rate=" + ",".join(f"{r:.6f}" for r in rates),
           f"--workers={workers}", f"--queue_capacity={queue}", f"--arrival_work_ms={work_ms:.6f}"]
    if samples_file:
        cmd += ["--service_samples=" + samples_file]
    elif regimes_ms:
        cmd += ["--service_regimes_ms=" + ",".join(f"{x:.6f}" for x in regimes_ms), f"--service_scv={regimes_scv}"]
    else:
        cmd += [f"--service_ms={mean_ms}", f"--service_m2={m2}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=os.path.join(ROOT, "models", "cifar10-resnet18"))
    ap.add_argument("--images", default=os.path.join(ROOT, "..", "shared", "datasets", "cifar10", "test"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--queue_capacity", type=int, default=8)
    ap.add_argument("--split", type=int, default=-2,
                    help="device split layer (-2: the bundle's last layer, everything on the device)")
    ap.add_argument("--rates", default="0.5,0.8,1.1,1.5,2.0", help="arrival rates as multiples of the capacity")
    ap.add_argument("--duration_s", type=float, default=40)
    ap.add_argument("--calibrate_s", type=float, default=15)
    ap.add_argument("--recalibrate_s", type=float, default=8)
    ap.add_argument("--saturate_s", type=float, default=15,
                    help="length of the saturated closed-loop run before each rate (its gaps between answers)")
    ap.add_argument("--regime_requests", type=int, default=250,
                    help="windows of this many consecutive answers in the saturated run make the service-speed "
                         "regimes")
    ap.add_argument("--order", choices=["shuffled", "classes"], default="shuffled",
                    help="the order the client sends the images in: shuffled (service times independent from one "
                         "request to the next, as M/G/1/K assumes) or classes (class folders one after another: "
                         "the service time drifts with the classes' difficulty)")
    ap.add_argument("--deadline_ms", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pin", type=int, default=1 if (os.cpu_count() or 1) >= 2 else 0,
                    help="1: the device on CPU 0, the server and the client on CPU 1 (taskset), so that the "
                         "client sends on time and the device's service time is its own; 0: no pinning")
    ap.add_argument("--keep", default="", help="keep each run's per-request results (eenn-client --results) here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device_prefix, other_prefix = ((["taskset", "-c", "0"], ["taskset", "-c", "1"]) if args.pin else ([], []))
    CLIENT_PREFIX[:] = other_prefix
    CLIENT_ARGS[:] = ["--shuffle", f"--seed={args.seed}"] if args.order == "shuffled" else []

    split = args.split
    if split == -2:
        manifest = json.load(open(os.path.join(args.bundle, "manifest.json")))
        split = len(manifest["metadata"]["calibration"]["layer_ms"])
    procs = []
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eenn_queue_validation_") as tmp:
        try:
            server, sready = start("eenn-server", ["--bundle=" + args.bundle, "--listen=127.0.0.1:0",
                                                   "--metrics_address=127.0.0.1:0", "--plaintext", "--threads=1"],
                                   tmp, "server", prefix=other_prefix)
            procs.append(server)
            device, dready = start("eenn-device", [
                "--bundle=" + args.bundle, "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                f"--server=127.0.0.1:{sready['grpc_port']}", "--server_plaintext", "--plaintext", "--threads=1",
                f"--workers={args.workers}", f"--queue_capacity={args.queue_capacity}", f"--split={split}"],
                tmp, "device", prefix=device_prefix)
            procs.append(device)
            addr = f"127.0.0.1:{dready['grpc_port']}"
            log(f"eenn-device at {addr}: {args.workers} worker(s), {args.queue_capacity} waiting, split {split}")
            client(addr, args.images, "--concurrency=1", "--duration_s=3")  # warm-up
            cal = client(addr, args.images, "--concurrency=1", f"--duration_s={args.calibrate_s}",
                         f"--deadline_ms={args.deadline_ms}")
            svc = cal["device_service_ms"]
            mean_ms, m2 = svc["mean"], svc["m2"]
            capacity = args.workers * 1000.0 / mean_ms
            log(f"service time: mean {mean_ms:.3f} ms, second moment {m2:.3f} ms^2, SCV {svc['scv']:.3f} "
                f"({svc['n']} requests); capacity {capacity:.1f} req/s")
            factors = [float(x) for x in args.rates.split(",")]
            rates = [f * capacity for f in factors]
            rows = []
            for f, rate in zip(factors, rates):
                m0 = metrics(dready["metrics_port"], COUNTERS)
                pre = client(addr, args.images, "--concurrency=1", f"--duration_s={args.recalibrate_s}",
                             f"--deadline_ms={args.deadline_ms}")["device_service_ms"]
                m1 = metrics(dready["metrics_port"], COUNTERS)
                pred = predict([rate], pre["mean"], pre["m2"], args.workers, args.queue_capacity)[0]
                sat = client(addr, args.images, f"--concurrency={args.workers + 2}",
                             f"--duration_s={args.saturate_s}", f"--deadline_ms={args.deadline_ms}",
                             f"--regime_requests={args.regime_requests}")
                m2_ = metrics(dready["metrics_port"], COUNTERS)
                # A forecast from the closed loops before the run: the busy
                # time per request at concurrency 1 (no arrival during a
                # service) as S0, its variance from the reply timings, and the
                # work per arrival from the saturated loop (about one arrival
                # during each service).
                _, cal_busy_ms = arrival_work(m0, m1)
                sat_work_ms, _ = arrival_work(m1, m2_)
                pred_work_forecast = predict([rate], cal_busy_ms, cal_busy_ms ** 2 + pre["m2"] - pre["mean"] ** 2,
                                             args.workers, args.queue_capacity, work_ms=sat_work_ms)[0] \
                    if args.workers == 1 and cal_busy_ms > 0 else None
                # Never idle, the device's gaps between answers are its service
                # times as a queue sees them (with the gRPC threads' work and
                # whatever else ran on its core); with several workers, the
                # gaps times the workers.
                gap = sat["answer_gap_ms"]
                sat_ms = args.workers * gap["mean"]
                sat_scv = gap["scv"]
                pred_sat = predict([rate], sat_ms, sat_ms * sat_ms * (1 + sat_scv), args.workers,
                                   args.queue_capacity)[0]
                regimes = [args.workers * x for x in gap["regimes_ms"]]
                pred_drift = predict([rate], None, None, args.workers, args.queue_capacity, regimes,
                                     gap["regimes_scv"])[0]
                before = metrics(dready["metrics_port"], COUNTERS)
                results = os.path.join(args.keep or tmp, f"run_{f}.jsonl")
                r = client(addr, args.images, f"--arrivals=poisson:{rate:.4f}", f"--duration_s={args.duration_s}",
                           f"--seed={args.seed}", f"--deadline_ms={args.deadline_ms}", "--window_s=5",
                           "--results=" + results)
                after = metrics(dready["metrics_port"], COUNTERS)
                # The service time as the queue saw it during the run: the
                # worker's busy time per request taken (reply hand-off and
                # whatever else ran on its core while it worked included);
                # its variance from the reply timings (the hand-off adds a
                # near-constant).
                taken = after[TAKEN] - before[TAKEN]
                busy_ms = 1000 * (after[BUSY] - before[BUSY]) / taken if taken > 0 else 0.0
                arrivals = r["arrivals"]
                measured = r["rejected"] / arrivals if arrivals else 0.0
                run_svc = r["device_service_ms"]
                in_run = predict([rate], run_svc["mean"], run_svc["m2"], args.workers, args.queue_capacity)[0] \
                    if run_svc["n"] > 0 else None
                run_var = max(0.0, run_svc["m2"] - run_svc["mean"] ** 2)
                in_run_busy = predict([rate], busy_ms, busy_ms * busy_ms + run_var, args.workers,
                                      args.queue_capacity)[0] if busy_ms > 0 else None
                # The run's own service-time distribution (reply timings of
                # every answered request, each plus the mean hand-off, busy
                # time less the timings' mean), used as it is: its tail (a
                # rare stall of the shared core) matters for a short queue.
                shift = busy_ms - run_svc["mean"] if run_svc["n"] > 0 else 0.0
                samples_file = os.path.join(tmp, f"samples_{f}.txt")
                n_samples = 0
                with open(results) as src, open(samples_file, "w") as dst:
                    for line in src:
                        rec = json.loads(line)
                        if "service_ms" in rec:
                            dst.write(f"{rec['service_ms'] + shift:.6f}\n")
                            n_samples += 1
                in_run_empirical = predict([rate], None, None, args.workers, args.queue_capacity,
                                           samples_file=samples_file)[0] if n_samples else None
                # The drift within the run: the reply timings' means over
                # windows of --regime_requests consecutive requests, scaled to
                # the busy time (the hand-off a constant share), as regimes.
                scale = busy_ms / run_svc["mean"] if run_svc["n"] > 0 and run_svc["mean"] > 0 else 0.0
                run_regimes = [scale * x for x in run_svc.get("regimes_ms", [])]
                in_run_drift = predict([rate], None, None, args.workers, args.queue_capacity, run_regimes,
                                       run_svc["regimes_scv"] / scale ** 2)[0] if run_regimes else None
                # The same with the arrivals' work taken from the service
                # (common/queueing.h, arrival_work_s): the run's work per
                # arrival from the device's counters, S0 from the busy time and
                # the timings' variance by without_work(); with the in-run
                # regimes too.
                run_work_ms, _ = arrival_work(before, after)
                in_run_work = in_run_work_drift = None
                s0_ms = s0_scv = None
                if args.workers == 1 and busy_ms > 0:
                    s0_ms, s0_scv = without_work(busy_ms, run_var, rate, run_work_ms)
                    in_run_work = predict([rate], s0_ms, s0_ms ** 2 * (1 + s0_scv), 1, args.queue_capacity,
                                          work_ms=run_work_ms)[0]
                    if run_regimes and run_var > 0:
                        # Each regime's S0 in the same proportion, its SCV
                        # within a window in the proportion of the whole run's.
                        within_scv = run_svc["regimes_scv"] / scale ** 2 * s0_scv / (run_var / busy_ms ** 2)
                        in_run_work_drift = predict([rate], None, None, 1, args.queue_capacity,
                                                    [s0_ms / busy_ms * x for x in run_regimes], within_scv,
                                                    work_ms=run_work_ms)[0]

                def err(pred_loss):
                    return (pred_loss - measured) / measured if pred_loss is not None and measured > 0 else None
                row = {
                    "load": f, "rate": rate, "arrivals": arrivals, "rejected": r["rejected"],
                    "missed": r["missed"], "failed": r["failed"], "measured_loss": measured,
                    "loss_ratio": r["loss_ratio"],
                    "cal_service_ms": pre["mean"], "cal_service_scv": pre["scv"],
                    "predicted_loss": pred["loss_probability"],
                    "sat_service_ms": sat_ms, "sat_service_scv": sat_scv,
                    "predicted_loss_saturated": pred_sat["loss_probability"],
                    "rel_error_saturated": (pred_sat["loss_probability"] - measured) / measured
                    if measured > 0 else None,
                    "rel_error": (pred["loss_probability"] - measured) / measured if measured > 0 else None,
                    "regimes_ms": regimes, "regimes_scv": gap["regimes_scv"],
                    "regime_spread": (max(regimes) - min(regimes)) / sat_ms if regimes else 0.0,
                    "predicted_loss_drift": pred_drift["loss_probability"],
                    "rel_error_drift": (pred_drift["loss_probability"] - measured) / measured
                    if measured > 0 else None,
                    "run_service_ms": run_svc["mean"], "run_service_scv": run_svc["scv"],
                    "predicted_loss_run_moments": in_run["loss_probability"] if in_run else None,
                    "rel_error_run_moments": (in_run["loss_probability"] - measured) / measured
                    if in_run and measured > 0 else None,
                    "busy_service_ms": busy_ms,
                    "busy_service_scv": run_var / busy_ms ** 2 if busy_ms > 0 else None,
                    "predicted_loss_busy": in_run_busy["loss_probability"] if in_run_busy else None,
                    "rel_error_busy": (in_run_busy["loss_probability"] - measured) / measured
                    if in_run_busy and measured > 0 else None,
                    "predicted_loss_empirical": in_run_empirical["loss_probability"] if in_run_empirical else None,
                    "rel_error_empirical": (in_run_empirical["loss_probability"] - measured) / measured
                    if in_run_empirical and measured > 0 else None,
                    "run_regimes_ms": run_regimes,
                    "run_regime_spread": (max(run_regimes) - min(run_regimes)) / busy_ms if run_regimes else 0.0,
                    "predicted_loss_busy_drift": in_run_drift["loss_probability"] if in_run_drift else None,
                    "rel_error_busy_drift": (in_run_drift["loss_probability"] - measured) / measured
                    if in_run_drift and measured > 0 else None,
                    "arrival_work_ms": run_work_ms, "s0_service_ms": s0_ms, "s0_service_scv": s0_scv,
                    "predicted_loss_work": in_run_work["loss_probability"] if in_run_work else None,
                    "rel_error_work": err(in_run_work["loss_probability"] if in_run_work else None),
                    "predicted_loss_work_drift": in_run_work_drift["loss_probability"] if in_run_work_drift else None,
                    "rel_error_work_drift": err(in_run_work_drift["loss_probability"] if in_run_work_drift else None),
                    "cal_busy_ms": cal_busy_ms, "sat_arrival_work_ms": sat_work_ms,
                    "predicted_loss_work_forecast": pred_work_forecast["loss_probability"]
                    if pred_work_forecast else None,
                    "rel_error_work_forecast": err(pred_work_forecast["loss_probability"]
                                                   if pred_work_forecast else None),
                    "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
                    "predicted_sojourn_ms": pred["mean_sojourn_ms"],
                    "send_lag_ms_max": r["send_lag_ms"]["max"],
                    "loadavg_1m": os.getloadavg()[0],
                    "method": pred["method"],
                }
                rows.append(row)
                log(f"  {f:.2f}x: {rate:.1f} req/s, {arrivals} arrivals, loss {measured:.4f} "
                    f"(predicted: cal {pred['loss_probability']:.4f}, sat {pred_sat['loss_probability']:.4f}, "
                    f"drift {pred_drift['loss_probability']:.4f}, busy {row['predicted_loss_busy'] or 0:.4f}, "
                    f"busy+drift {row['predicted_loss_busy_drift'] or 0:.4f}, "
                    f"empirical {row['predicted_loss_empirical'] or 0:.4f}; arrival work "
                    f"{run_work_ms:.3f} ms: {row['predicted_loss_work'] or 0:.4f}, with drift "
                    f"{row['predicted_loss_work_drift'] or 0:.4f}, forecast {row['predicted_loss_work_forecast'] or 0:.4f})")
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
    result = {"bundle": args.bundle, "workers": args.workers, "queue_capacity": args.queue_capacity,
              "order": args.order,
              "pinned": bool(args.pin),
              "split": split, "duration_s": args.duration_s, "seed": args.seed,
              "service_ms": {"mean": mean_ms, "m2": m2, "scv": svc["scv"], "n": svc["n"]},
              "capacity_rps": capacity, "method": rows[0]["method"] if rows else "", "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"eenn-device, {args.workers} worker(s), queue {args.queue_capacity} (K = "
          f"{args.workers + args.queue_capacity}); service {mean_ms:.3f} ms mean, SCV {svc['scv']:.3f}; "
          f"capacity {capacity:.1f} req/s; {result['method']}")

    def pct(x):
        return "-" if x is None else f"{100 * x:+.1f}%"

    print(f"{'load':>5} {'rate/s':>8} {'arrivals':>8} {'rejected':>8} {'missed':>6} {'measured':>9} "
          f"{'cal_ms':>7} {'cal_scv':>7} {'pred(cal)':>9} {'rel.err':>8} "
          f"{'sat_ms':>7} {'pred(sat)':>9} {'rel.err':>8} {'spread':>6} {'pred(drift)':>11} {'rel.err':>8} "
          f"{'run_ms':>7} {'run_scv':>7} {'pred(run)':>9} {'rel.err':>8} "
          f"{'busy_ms':>7} {'pred(busy)':>10} {'rel.err':>8} {'pred(busy,drift)':>16} {'rel.err':>8} "
          f"{'pred(empirical)':>15} {'rel.err':>8} "
          f"{'work_ms':>7} {'pred(work)':>10} {'rel.err':>8} {'pred(work,drift)':>16} {'rel.err':>8} "
          f"{'pred(work,fcst)':>15} {'rel.err':>8} "
          f"{'p99_ms':>8} {'loadavg':>7}")
    for r in rows:
        print(f"{r['load']:5.2f} {r['rate']:8.1f} {r['arrivals']:8d} {r['rejected']:8d} {r['missed']:6d} "
              f"{r['measured_loss']:9.4f} {r['cal_service_ms']:7.3f} {r['cal_service_scv']:7.2f} "
              f"{r['predicted_loss']:9.4f} {pct(r['rel_error']):>8} "
              f"{r['sat_service_ms']:7.3f} {r['predicted_loss_saturated']:9.4f} {pct(r['rel_error_saturated']):>8} "
              f"{100 * r['regime_spread']:5.1f}% {r['predicted_loss_drift']:11.4f} {pct(r['rel_error_drift']):>8} "
              f"{r['run_service_ms']:7.3f} {r['run_service_scv']:7.2f} {r['predicted_loss_run_moments'] or 0:9.4f} "
              f"{pct(r['rel_error_run_moments']):>8} {r['busy_service_ms']:7.3f} {r['predicted_loss_busy'] or 0:10.4f} "
              f"{pct(r['rel_error_busy']):>8} {r['predicted_loss_busy_drift'] or 0:16.4f} "
              f"{pct(r['rel_error_busy_drift']):>8} {r['predicted_loss_empirical'] or 0:15.4f} "
              f"{pct(r['rel_error_empirical']):>8} "
              f"{r['arrival_work_ms']:7.3f} {r['predicted_loss_work'] or 0:10.4f} {pct(r['rel_error_work']):>8} "
              f"{r['predicted_loss_work_drift'] or 0:16.4f} {pct(r['rel_error_work_drift']):>8} "
              f"{r['predicted_loss_work_forecast'] or 0:15.4f} {pct(r['rel_error_work_forecast']):>8} "
              f"{r['p99_ms']:8.2f} {r['loadavg_1m']:7.2f}")


if __name__ == "__main__":
    main()
