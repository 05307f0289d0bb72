#!/usr/bin/python3
"""Several eenn-device daemons on one machine, each driven by its own client at
once: requests/s and service time per device. With --threads=1 each, N
devices on N cores should each keep close to a lone device's throughput;
before inference threads applied --threads to themselves (common/threads.h,
InitComputeThread) they spun against each other.

    tools/bench/colocated_devices.py
    tools/bench/colocated_devices.py --devices 2 --threads 1 --concurrency 3 --limit 600 --rounds 2
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import ROOT, in_parallel, run_client, start, stop_all  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=os.path.join(ROOT, "models", "cifar10-resnet18"))
    ap.add_argument("--images", default=os.path.join(ROOT, "..", "shared", "datasets", "cifar10", "test"))
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=3)
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2, help="the last round is reported (the first warms up)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="eenn-colocated-")
    procs = []
    try:
        ports = []
        for i in range(a.devices):
            p, r = start("eenn-device", [f"--bundle={a.bundle}", "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                                         "--plaintext", f"--threads={a.threads}", f"--workers={a.workers}"], tmp, f"d{i}")
            procs.append(p)
            ports.append(r["grpc_port"])
        extra = [f"--concurrency={a.concurrency}", f"--limit={a.limit}"]
        for _ in range(a.rounds):
            res = in_parallel([lambda port=port: run_client(f"127.0.0.1:{port}", a.images, extra) for port in ports])
        print(f"{a.devices} devices (--threads={a.threads} --workers={a.workers}), {a.concurrency} in flight each, "
              f"{a.limit} images:")
        for i, r in enumerate(res):
            print(f"  device {i}: {r['throughput_rps']:.1f} requests/s, service p50 {r['device_service_ms']['p50']:.2f} ms, "
                  f"{r['answered']} answered")
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
