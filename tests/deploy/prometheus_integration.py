#!/usr/bin/python3
"""Integration test of deploy/: starts eenn-server and eenn-device with the
command lines of deploy/systemd (unit ExecStart + environment file, only paths,
ports and thread counts changed for the test) over mutual TLS, classifies
CIFAR-10 test images through eenn-client, starts a real Prometheus with
deploy/prometheus/prometheus.yml and its rules (targets and intervals changed
for the test) and reads back the p99 end-to-end latency with
histogram_quantile, the recording rules and `up`.

  prometheus_integration.py REPO_ROOT BIN_DIR IMAGES_DIR
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

import deploy_lib

DEADLINE_S = 90  # the whole test; it takes about 20 s on 2 cores


class Failure(Exception):
    pass


def wait_for(what, predicate, timeout, procs=()):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        for name, p, log in procs:
            if p.poll() is not None:
                raise Failure(f"{name} exited with {p.returncode} while waiting for {what}:\n{open(log).read()}")
        v = predicate()
        if v:
            return v
        time.sleep(0.2)
    raise Failure(f"timed out after {timeout}s waiting for {what}")


def daemon_argv(repo, bin_dir, name, overrides, tls_dir):
    """argv of deploy/systemd/eenn-NAME.service with deploy/systemd/NAME.env,
    as systemd would run it, after the test's overrides."""
    unit = os.path.join(repo, "deploy/systemd", f"eenn-{name}.service")
    env = deploy_lib.read_env_file(os.path.join(repo, "deploy/systemd", f"{name}.env"))
    for k, v in overrides.items():
        if k not in env:
            raise Failure(f"{name}.env has no {k}")
        env[k] = v
    # Certificates from tools/make-certs.sh instead of /etc/eenn/tls.
    for k in list(env):
        env[k] = env[k].replace("/etc/eenn/tls", tls_dir)
    argv = deploy_lib.unit_argv(unit, env)
    if argv[0] != f"/usr/local/bin/eenn-{name}":
        raise Failure(f"{unit}: ExecStart runs {argv[0]}")
    argv[0] = os.path.join(bin_dir, f"eenn-{name}")
    problems = deploy_lib.unknown_flags(argv, argv[0])
    if problems:
        raise Failure(f"{unit}: " + "; ".join(problems))
    return argv


def query(prom, expr):
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise Failure(f"query {expr}: {body}")
    return body["data"]["result"]


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    repo, bin_dir, images = sys.argv[1:4]
    start = time.monotonic()
    if not os.path.isdir(images):
        print(f"SKIP: no CIFAR-10 test images at {images} (cmake -DEENN_CIFAR10_DIR=...)")
        sys.exit(77)  # ctest's SKIP_RETURN_CODE
    for tool in ("/usr/bin/prometheus", "/usr/bin/openssl"):
        if not os.access(tool, os.X_OK):
            raise Failure(f"{tool} is missing: run tools/setup.sh")
    tmp = tempfile.mkdtemp(prefix="eenn-deploy-prom-")
    procs = []  # (name, Popen, log)

    def start_proc(name, argv):
        log = os.path.join(tmp, f"{name}.log")
        p = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((name, p, log))
        return p

    try:
        tls = os.path.join(tmp, "tls")
        subprocess.run([os.path.join(repo, "tools/make-certs.sh"), tls, "server", "device", "client"], check=True)
        bundle = os.path.join(repo, "models/cifar10-resnet18")
        local = {"EENN_BUNDLE": bundle, "EENN_LISTEN": "127.0.0.1:0", "EENN_METRICS_ADDRESS": "127.0.0.1:0"}

        server_env = deploy_lib.read_env_file(os.path.join(repo, "deploy/systemd/server.env"))
        server_argv = daemon_argv(repo, bin_dir, "server", dict(local, EENN_SERVER_FLAGS=server_env[
            "EENN_SERVER_FLAGS"].replace("--threads=0", "--threads=1")), tls)
        ready_s = os.path.join(tmp, "server.ready")
        server = start_proc("eenn-server", server_argv + ["--ready_file", ready_s])
        wait_for("eenn-server ready", lambda: os.path.exists(ready_s) and os.path.getsize(ready_s) > 0, 30, procs)
        sready = json.load(open(ready_s))

        device_env = deploy_lib.read_env_file(os.path.join(repo, "deploy/systemd/device.env"))
        device_argv = daemon_argv(repo, bin_dir, "device", dict(
            local, EENN_SERVER=f"127.0.0.1:{sready['grpc_port']}",
            EENN_DEVICE_FLAGS=device_env["EENN_DEVICE_FLAGS"].replace("--threads=0", "--threads=1")), tls)
        ready_d = os.path.join(tmp, "device.ready")
        device = start_proc("eenn-device", device_argv + ["--ready_file", ready_d])
        wait_for("eenn-device ready", lambda: os.path.exists(ready_d) and os.path.getsize(ready_d) > 0, 30, procs)
        dready = json.load(open(ready_d))

        # Prometheus with the shipped configuration and rules: only the targets
        # (the test's ports) and the intervals (1 s) differ.
        with open(os.path.join(repo, "deploy/prometheus/prometheus.yml")) as f:
            config = yaml.safe_load(f)
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [os.path.join(repo, "deploy/prometheus", r) for r in config["rule_files"]]
        ports = {"eenn-server": sready["metrics_port"], "eenn-device": dready["metrics_port"]}
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        if set(jobs) != set(ports):
            raise Failure(f"prometheus.yml jobs {sorted(jobs)}, expected {sorted(ports)}")
        for name, port in ports.items():
            jobs[name]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            yaml.safe_dump(config, f)
        subprocess.run(["promtool", "check", "config", cfg], check=True, stdout=subprocess.DEVNULL)

        prom_port = deploy_lib.free_port()
        start_proc("prometheus", ["/usr/bin/prometheus", f"--config.file={cfg}",
                                  f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
                                  f"--web.listen-address=127.0.0.1:{prom_port}"])

        def prom_ready():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for("prometheus ready", prom_ready, 30, procs)

        # Both targets up: scraped once before the requests, so that rate() sees
        # the counters rise.
        def targets_up():
            r = query(prom_port, "up")
            return len(r) == 2 and all(s["value"][1] == "1" for s in r) and r
        up = wait_for("up == 1 for both targets", targets_up, 20, procs)
        for s in up:
            print(f"up{{job=\"{s['metric']['job']}\"}} = {s['value'][1]}")

        # Requests: 200 CIFAR-10 test images over mutual TLS.
        client = subprocess.run(
            [os.path.join(bin_dir, "eenn-client"), "--device", f"127.0.0.1:{dready['grpc_port']}",
             "--tls_cert", os.path.join(tls, "client.pem"), "--tls_key", os.path.join(tls, "client.key"),
             "--tls_ca", os.path.join(tls, "ca.pem"), "--limit", "200", "--concurrency", "4", "--quiet",
             "--json", images], capture_output=True, text=True, timeout=60)
        if client.returncode != 0:
            raise Failure(f"eenn-client failed ({client.returncode}):\n{client.stdout}\n{client.stderr}")
        print("eenn-client:", client.stdout.strip().splitlines()[-1])

        # The p99 from the raw buckets, once a scrape after the requests is in.
        p99_expr = ('histogram_quantile(0.99, sum by (le) '
                    '(rate(eenn_device_stage_duration_seconds_bucket{stage="end_to_end"}[30s])))')
        count_expr = 'sum(eenn_device_stage_duration_seconds_count{stage="end_to_end"})'

        def scraped_all():
            c = query(prom_port, count_expr)
            return c and float(c[0]["value"][1]) >= 200
        wait_for("a scrape with the 200 requests", scraped_all, 20, procs)

        def p99_value():
            r = query(prom_port, p99_expr)
            if len(r) != 1:
                return None
            v = float(r[0]["value"][1])
            return v if math.isfinite(v) else None
        p99 = wait_for("a finite p99", p99_value, 20, procs)
        if not (0 < p99 <= 10):
            raise Failure(f"p99 {p99} s outside (0, 10]")
        print(f"PromQL {p99_expr} = {p99 * 1e3:.1f} ms")

        # The recording rules computed from the same scrapes. A rule evaluated
        # before its window holds two scrapes of the requests records NaN: wait
        # for an evaluation that has them.
        def recorded(name):
            r = query(prom_port, name)
            return r if r and math.isfinite(float(r[0]["value"][1])) else None
        rec = wait_for("instance:eenn_device_end_to_end_latency_seconds:p99_rate5m",
                       lambda: recorded("instance:eenn_device_end_to_end_latency_seconds:p99_rate5m"), 20, procs)
        rp99 = float(rec[0]["value"][1])
        if not (math.isfinite(rp99) and 0 < rp99 <= 10):
            raise Failure(f"recorded p99 {rp99}")
        print(f"instance:eenn_device_end_to_end_latency_seconds:p99_rate5m = {rp99 * 1e3:.1f} ms")
        ratio = wait_for("instance:eenn_device_early_exit:ratio_rate5m",
                         lambda: recorded("instance:eenn_device_early_exit:ratio_rate5m"), 20, procs)
        er = float(ratio[0]["value"][1])
        if not 0 <= er <= 1:
            raise Failure(f"early-exit ratio {er}")
        print(f"instance:eenn_device_early_exit:ratio_rate5m = {er:.3f}")
        # The server is scraped on its own schedule: its scrape with the
        # offloads, and a rule evaluation after it, may come after the
        # device's (the 200 requests take about half a second).
        def server_ok():
            srv = query(prom_port, "instance:eenn_server_requests:rate5m")
            return [s for s in srv if s["metric"].get("code") == "OK" and float(s["value"][1]) > 0]
        try:
            srv = wait_for("OK Resume requests in instance:eenn_server_requests:rate5m", server_ok, 20, procs)
        except Failure as e:
            raise Failure(f"{e}: {query(prom_port, 'instance:eenn_server_requests:rate5m')}")
        print(f"instance:eenn_server_requests:rate5m{{code=\"OK\"}} = {float(srv[0]['value'][1]):.2f}/s")
        ready = query(prom_port, "eenn_server_ready")
        if not ready or ready[0]["value"][1] != "1":
            raise Failure(f"eenn_server_ready: {ready}")
        firing = query(prom_port, 'ALERTS{alertstate="firing"}')
        if firing:
            raise Failure(f"alerts firing on a healthy pair: {firing}")
        print(f"peak RSS: eenn-server {peak_rss_mib(server.pid):.0f} MiB, "
              f"eenn-device {peak_rss_mib(device.pid):.0f} MiB")

        # Clean shutdown of both daemons (SIGTERM: drain, exit 0).
        for name, p in (("eenn-device", device), ("eenn-server", server)):
            p.send_signal(signal.SIGTERM)
            if p.wait(timeout=20) != 0:
                raise Failure(f"{name} exited with {p.returncode} on SIGTERM")
        print(f"OK in {time.monotonic() - start:.1f} s")
        if time.monotonic() - start > DEADLINE_S:
            raise Failure("took longer than the test's deadline")
    except Exception:
        for name, p, log in procs:
            with open(log) as f:
                print(f"---- {name} log (last 40 lines)", *f.readlines()[-40:], sep="", file=sys.stderr)
        raise
    finally:
        for name, p, log in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if os.environ.get("EENN_KEEP_TMP"):
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except (Failure, subprocess.CalledProcessError, OSError, KeyError, ValueError) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
