"""Starting the eenn daemons from benchmark scripts: a binary from build/bin with
a ready file, waited for until it reports its ports."""
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "build", "bin")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def start(binary, args, tmp, name, timeout_s=180, prefix=()):
    """Starts build/bin/<binary> with `args`, its log in tmp/<name>.log; returns
    (process, the ready file's JSON) once it serves. `prefix` goes before the
    binary (for example taskset -c 1)."""
    ready = os.path.join(tmp, name + ".ready")
    logf = open(os.path.join(tmp, name + ".log"), "w")
    p = subprocess.Popen(list(prefix) + [os.path.join(BIN, binary)] + args + ["--ready_file=" + ready],
                         stdout=logf, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"{binary} exited {p.returncode}:\n" + open(logf.name).read())
        if os.path.exists(ready):
            try:
                with open(ready) as f:
                    return p, json.load(f)
            except ValueError:  # still being written
                pass
        time.sleep(0.1)
    p.kill()
    raise SystemExit(f"{binary} did not become ready:\n" + open(logf.name).read())


def stop_all(procs, timeout_s=60):
    """SIGTERM to every process, then waits for each; one still running after
    `timeout_s` is killed."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def in_parallel(fns):
    """Calls every function at once, each on its own thread; returns their
    results in order. A SystemExit on a thread (a failed client) is raised
    here, not lost with the thread."""
    out, errors = [None] * len(fns), []

    def one(i):
        try:
            out[i] = fns[i]()
        except SystemExit as e:
            errors.append(str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(errors[0])
    return out


class CpuQuota:
    """A cgroup v1 cpu cgroup that limits its processes to `share` of a core,
    over the shortest period the kernel allows (a 1 ms quota) unless
    `period_us` is given, so that a throttled process stalls for milliseconds
    at most. `prefix` starts a command inside it (for start()); remove() when
    done. Needs root and /sys/fs/cgroup/cpu."""

    def __init__(self, share, name, period_us=0):
        self.path = f"/sys/fs/cgroup/cpu/{name}-{os.getpid()}"
        period = period_us or max(1000, math.ceil(1000 / share))
        try:
            os.makedirs(self.path)
            with open(os.path.join(self.path, "cpu.cfs_period_us"), "w") as f:
                f.write(str(period))
            with open(os.path.join(self.path, "cpu.cfs_quota_us"), "w") as f:
                f.write(str(int(period * share)))
        except OSError as e:
            self.remove()
            raise SystemExit(f"cannot limit CPU time with a cgroup at {self.path} ({e}): run as root "
                             "on a machine with cgroup v1's cpu controller, or do without the limit")
        self.prefix = ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh"]

    def remove(self):
        if os.path.isdir(self.path):
            os.rmdir(self.path)


def run_client(device, images, extra=(), results=None, prefix=()):
    """Runs eenn-client --json against `device` (host:port, plaintext) on
    `images` with `extra` flags (`prefix` before the binary, e.g. taskset);
    returns its summary, or exits with its output."""
    cmd = list(prefix) + [os.path.join(BIN, "eenn-client"), "--plaintext", "--quiet", "--json", "--device=" + device]
    if results:
        cmd.append("--results=" + results)
    cmd += list(extra) + [images]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise SystemExit(f"eenn-client failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")


def metrics(port, series):
    """The values of exact series (name{labels}) from one scrape of a daemon's
    /metrics: {series: value} for those present (empty when the daemon is not
    there)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    wanted, found = set(series), {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            found[name] = float(value)
    return found


def metric(port, series):
    """The value of one exact series (name{labels}) on a daemon's /metrics, or
    None when the daemon or the series is not there."""
    return metrics(port, [series]).get(series)
