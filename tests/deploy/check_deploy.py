#!/usr/bin/python3
"""Static checks of deploy/ (no cluster, no Docker here):

  check_deploy.py REPO BIN_DIR kubernetes   manifests parse and hang together;
                                            every flag they pass exists
  check_deploy.py REPO BIN_DIR docker       Dockerfiles: COPY sources, stages,
                                            .dockerignore, apt packages, runtime
                                            libraries, ENTRYPOINT flags
  check_deploy.py REPO BIN_DIR systemd      the units' ExecStart with their
                                            environment files: every flag exists
  check_deploy.py REPO BIN_DIR selftest     each check above fails on a broken copy

Each check prints what it verified and exits 1 listing every problem.
"""

import copy
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import yaml

import deploy_lib

NAMESPACE = "eenn"
IMAGE_TO_DOCKERFILE = {"eenn/eenn-server": "server.Dockerfile", "eenn/eenn-device": "device.Dockerfile"}


# ---------------------------------------------------------------- Dockerfiles

def parse_dockerfile(path):
    """[(stage name or index, [(instruction, argument text)])], continuation lines joined."""
    text = open(path).read()
    text = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        instr, _, arg = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arg.strip(), re.I)
            stages.append({"base": m.group(1), "name": m.group(2) or str(len(stages)), "steps": []})
        else:
            stages[-1]["steps"].append((instr, arg.strip()))
    return stages


def apt_packages(stage):
    pkgs = []
    for instr, arg in stage["steps"]:
        if instr == "RUN":
            for m in re.finditer(r"apt-get install ([^&;|]*)", arg):
                pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def exec_form(arg):
    return json.loads(arg) if arg.startswith("[") else shlex.split(arg)


def setup_packages(repo):
    text = open(os.path.join(repo, "tools/setup.sh")).read()
    m = re.search(r"PACKAGES=\((.*?)\n\)", text, re.S)
    return set(re.sub(r"#.*", "", m.group(1)).split())


def needed_packages(binary):
    """Debian packages of the shared libraries `binary` links against directly."""
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]", subprocess.run(
        ["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout)
    paths = {}
    # Resolved as an installed system would (a sanitizer run puts instrumented
    # copies of some libraries on LD_LIBRARY_PATH).
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    for line in subprocess.run(["ldd", binary], capture_output=True, text=True, check=True,
                               env=env).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            paths[m.group(1)] = m.group(2)
    candidates = {}
    for lib in needed:
        if lib in paths:
            p = os.path.realpath(paths[lib])
            candidates[lib] = [paths[lib], p, re.sub(r"^/usr", "", p), re.sub(r"^/usr", "", paths[lib])]
    owners = {}  # path -> package, one dpkg call for all
    r = subprocess.run(["dpkg", "-S"] + sorted({c for cs in candidates.values() for c in cs}),
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        for p in path.split(", "):
            owners[p.strip()] = pkg.split(":")[0].split(",")[0].strip()
    pkgs = {}
    for lib in needed:
        pkgs[lib] = next((owners[c] for c in candidates.get(lib, []) if c in owners), None)
    return pkgs


def configure_build_context(repo, build, configure, binary):
    """Copies what the build stage COPYs into a scratch WORKDIR and runs its cmake
    configure line there; the binary's target must exist."""
    import shutil
    import tempfile
    tmp = tempfile.mkdtemp(prefix="eenn-docker-context-")
    try:
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        for instr, arg in build["steps"]:
            if instr != "COPY" or "--from=" in arg:
                continue
            words = shlex.split(arg)
            dest = os.path.join(src, words[-1]) if words[-1] not in ("./", ".") else src
            for s in words[:-1]:
                p = os.path.join(repo, s)
                if os.path.isdir(p):
                    shutil.copytree(p, dest if words[-1] not in ("./", ".") else os.path.join(src, s))
                else:
                    os.makedirs(dest, exist_ok=True)
                    shutil.copy(p, dest)
        r = subprocess.run(shlex.split(configure), cwd=src, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            return [f"the build context does not configure: {configure}\n{r.stdout[-3000:]}{r.stderr[-3000:]}"]
        t = subprocess.run(["cmake", "--build", "build", "--target", "help"], cwd=src, capture_output=True,
                           text=True, timeout=120)
        if f"... {binary}" not in t.stdout:
            return [f"the configured build context has no target {binary}"]
        return []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_docker(repo, bin_dir, dockerfiles=None, report=print, configure_context=True):
    problems = []
    ddir = os.path.join(repo, "deploy/docker")
    dockerfiles = dockerfiles or {n: os.path.join(ddir, n) for n in IMAGE_TO_DOCKERFILE.values()}
    known = setup_packages(repo)
    top = open(os.path.join(repo, "CMakeLists.txt")).read()
    subdirs = set(re.findall(r"^add_subdirectory\((\w+)\)", top, re.M)) - {"tests"}
    for name, path in sorted(dockerfiles.items()):
        binary = "eenn-server" if name.startswith("server") else "eenn-device"
        stages = parse_dockerfile(path)
        names = [s["name"] for s in stages]
        if len(stages) < 2:
            problems.append(f"{name}: not multi-stage")
            continue
        for s in stages:
            if s["base"] != "debian:12" and s["base"] not in names:
                problems.append(f"{name}: stage {s['name']} is FROM {s['base']}, expected debian:12")
        build, runtime = stages[0], stages[-1]
        copied = []
        for s in stages:
            for instr, arg in s["steps"]:
                if instr in ("ADD",):
                    problems.append(f"{name}: use COPY, not ADD")
                if instr != "COPY":
                    continue
                words = shlex.split(arg)
                opts = [w for w in words if w.startswith("--")]
                srcs = [w for w in words if not w.startswith("--")][:-1]
                frm = [o.split("=", 1)[1] for o in opts if o.startswith("--from=")]
                if frm:
                    if frm[0] not in names[:names.index(s["name"])]:
                        problems.append(f"{name}: COPY --from={frm[0]}: no earlier stage of that name")
                    continue
                for src in srcs:
                    copied.append(src.rstrip("/"))
                    if not os.path.exists(os.path.join(repo, src)):
                        problems.append(f"{name}: COPY source {src} does not exist")
        # Every directory the top-level CMakeLists.txt adds must be in the build context.
        for d in sorted(subdirs):
            if d not in copied:
                problems.append(f"{name}: the build stage does not COPY {d}/ (CMakeLists.txt adds it)")
        # The .dockerignore allow-list is exactly the COPY sources.
        ignore = path + ".dockerignore"
        if not os.path.exists(ignore):
            problems.append(f"{name}: no {os.path.basename(ignore)}")
        else:
            lines = [l.strip() for l in open(ignore) if l.strip() and not l.startswith("#")]
            allowed = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
            if lines[:1] != ["*"]:
                problems.append(f"{name}: .dockerignore must start with '*' (allow-list)")
            if allowed != set(copied):
                problems.append(f"{name}: .dockerignore allows {sorted(allowed)}, COPY takes {sorted(copied)}")
        # Packages: build stage from tools/setup.sh; every package exists in Debian.
        build_pkgs, run_pkgs = apt_packages(build), apt_packages(runtime)
        for p in build_pkgs:
            if p not in known:
                problems.append(f"{name}: build package {p} is not in tools/setup.sh PACKAGES")
        wanted = sorted(set(build_pkgs + run_pkgs))
        shown = subprocess.run(["apt-cache", "show", "--no-all-versions"] + wanted, capture_output=True, text=True)
        found = set(re.findall(r"^Package: (\S+)", shown.stdout, re.M))
        for p in wanted:
            if p not in found:
                problems.append(f"{name}: apt-cache knows no package {p}")
        # Runtime stage: every library the binary links against directly comes
        # from a package it installs (libc6 and libgcc-s1 are in every Debian image).
        # Sanitizer runtimes are there only in a sanitizer build
        # (tools/sanitize.sh), which the images never hold.
        libs = needed_packages(os.path.join(bin_dir, binary))
        for lib, pkg in sorted(libs.items()):
            if re.match(r"lib(asan|ubsan|tsan|lsan)\.so", lib):
                continue
            if pkg is None:
                problems.append(f"{name}: {binary} needs {lib}, which no package provides here")
            elif pkg not in run_pkgs and pkg not in ("libc6", "libgcc-s1"):
                problems.append(f"{name}: {binary} needs {lib} from {pkg}, not installed by the runtime stage")
        # Build stage builds the binary; runtime copies it from there.
        if not any(i == "RUN" and f"--target {binary}" in a for i, a in build["steps"]):
            problems.append(f"{name}: the build stage does not build {binary}")
        if not any(i == "COPY" and f"build/bin/{binary} " in a and "--from=" + build["name"] in a
                   for i, a in runtime["steps"]):
            problems.append(f"{name}: the runtime stage does not copy {binary} from the build stage")
        # ENTRYPOINT: the binary with flags it defines, a bundle that is in the image.
        eps = [exec_form(a) for i, a in runtime["steps"] if i == "ENTRYPOINT"]
        if len(eps) != 1:
            problems.append(f"{name}: expected one ENTRYPOINT")
            continue
        ep = eps[0]
        if ep[0] != f"/usr/local/bin/{binary}":
            problems.append(f"{name}: ENTRYPOINT runs {ep[0]}")
        problems += [f"{name}: ENTRYPOINT: {p}" for p in deploy_lib.unknown_flags(ep, os.path.join(bin_dir, binary))]
        bundle = [a.split("=", 1)[1] for a in ep if a.startswith("--bundle=")]
        if not bundle or not any(i == "COPY" and shlex.split(a)[-1].rstrip("/") == bundle[0]
                                 for i, a in runtime["steps"]):
            problems.append(f"{name}: --bundle {bundle} is not a directory the runtime stage copies")
        if not any(i == "USER" and a not in ("root", "0") for i, a in runtime["steps"]):
            problems.append(f"{name}: the runtime stage runs as root")
        # The build context the COPY lines assemble configures with the stage's cmake line.
        configure = [m.group(0) for i, a in build["steps"] if i == "RUN"
                     for m in [re.search(r"cmake -S \. -B build[^&;]*", a)] if m]
        if not configure:
            problems.append(f"{name}: no 'cmake -S . -B build' in the build stage")
        elif configure_context:
            problems += [f"{name}: {p}" for p in configure_build_context(repo, build, configure[0], binary)]
        report(f"{name}: {len(stages)} stages, COPY {sorted(copied)}, build packages {len(build_pkgs)} "
               f"(all in setup.sh), runtime packages {len(run_pkgs)} cover {binary}'s "
               f"{len(libs)} libraries, ENTRYPOINT {ep}")
    return problems


# ----------------------------------------------------------------- Kubernetes

def load_manifests(repo):
    docs = {}
    for path in sorted(glob.glob(os.path.join(repo, "deploy/kubernetes/*.yaml"))):
        with open(path) as f:
            docs[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d is not None]
    return docs


def addr_port(value):
    return int(value.rsplit(":", 1)[1])


def check_kubernetes(repo, bin_dir, docs=None, report=print):
    problems = []
    docs = docs if docs is not None else load_manifests(repo)
    objs = [(f, d) for f, ds in docs.items() for d in ds]
    for f, d in objs:
        for key in ("apiVersion", "kind") if d.get("kind") == "Kustomization" else ("apiVersion", "kind", "metadata"):
            if key not in d:
                problems.append(f"{f}: a document without {key}")
    by_kind = {}
    for f, d in objs:
        by_kind.setdefault(d.get("kind"), []).append((f, d))
    kust = docs.get("kustomization.yaml", [{}])[0]
    for r in kust.get("resources", []):
        if r not in docs:
            problems.append(f"kustomization.yaml: resource {r} does not exist")
    for f in docs:
        if f != "kustomization.yaml" and f not in kust.get("resources", []):
            problems.append(f"kustomization.yaml does not list {f}")
    if not any(d["metadata"].get("name") == NAMESPACE for _, d in by_kind.get("Namespace", [])):
        problems.append(f"no Namespace {NAMESPACE}")
    for f, d in objs:
        if d.get("kind") not in ("Namespace", "Kustomization") and d["metadata"].get("namespace") != NAMESPACE:
            problems.append(f"{f}: {d.get('kind')} {d['metadata'].get('name')} not in namespace {NAMESPACE}")

    services = {d["metadata"]["name"]: d for _, d in by_kind.get("Service", [])}
    workloads = by_kind.get("Deployment", []) + by_kind.get("DaemonSet", [])
    kinds = {d["metadata"]["name"]: d["kind"] for _, d in workloads}
    if kinds.get("eenn-server") != "Deployment" or kinds.get("eenn-device") != "DaemonSet":
        problems.append(f"expected Deployment eenn-server and DaemonSet eenn-device, found {kinds}")
    server_grpc_port = None
    for f, w in workloads:
        name = w["metadata"]["name"]
        tmpl = w["spec"]["template"]
        labels = tmpl["metadata"].get("labels", {})
        sel = w["spec"]["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            problems.append(f"{f}: {name}: selector {sel} does not match the pod labels {labels}")
        svc = services.get(name)
        if svc is None:
            problems.append(f"{f}: {name}: no Service of the same name")
        else:
            if svc["spec"].get("clusterIP") != "None":
                problems.append(f"{name}: Service is not headless (clusterIP: None)")
            if any(labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
                problems.append(f"{name}: Service selector {svc['spec']['selector']} misses the pods")
        containers = tmpl["spec"]["containers"]
        if len(containers) != 1:
            problems.append(f"{f}: {name}: expected one container")
            continue
        c = containers[0]
        image, _, tag = c["image"].partition(":")
        dockerfile = IMAGE_TO_DOCKERFILE.get(image)
        if dockerfile is None or not tag:
            problems.append(f"{f}: {name}: image {c['image']} is not one of {sorted(IMAGE_TO_DOCKERFILE)} with a tag")
            continue
        if "command" in c:
            problems.append(f"{f}: {name}: 'command' replaces the image's ENTRYPOINT; pass flags in 'args'")
        binary = "eenn-server" if "server" in image else "eenn-device"
        ep = [exec_form(a) for i, a in parse_dockerfile(os.path.join(repo, "deploy/docker", dockerfile))[-1]["steps"]
              if i == "ENTRYPOINT"][0]
        argv = ep + [str(a) for a in c.get("args", [])]
        problems += [f"{f}: {name}: {p}" for p in deploy_lib.unknown_flags(argv, os.path.join(bin_dir, binary))]
        flags = {}
        for a in argv[1:]:
            k, _, v = a[2:].partition("=")
            flags[k] = v  # later ones win, as in absl
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        grpc_port, metrics_port = addr_port(flags.get("listen", "")), addr_port(flags.get("metrics_address", ""))
        if ports.get("grpc") != grpc_port or ports.get("metrics") != metrics_port:
            problems.append(f"{f}: {name}: container ports {ports} vs --listen {grpc_port}, "
                            f"--metrics_address {metrics_port}")
        if name == "eenn-server":
            server_grpc_port = grpc_port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not p or "grpc" not in p:
                problems.append(f"{f}: {name}: no grpc {probe}")
            elif p["grpc"].get("port") != grpc_port:
                problems.append(f"{f}: {name}: {probe} on port {p['grpc'].get('port')}, gRPC is on {grpc_port}")
        # Kubernetes' grpc probes speak plaintext gRPC only.
        if flags.get("plaintext") not in ("", "true", "1"):
            problems.append(f"{f}: {name}: grpc probes need --plaintext on the listening side")
        req = c.get("resources", {}).get("requests", {})
        if "cpu" not in req or "memory" not in req:
            problems.append(f"{f}: {name}: resource requests need cpu and memory")
        ann = tmpl["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(metrics_port):
            problems.append(f"{f}: {name}: scrape annotations {ann} do not point at port {metrics_port}")
        if svc is not None:
            sports = {p["name"]: (p["port"], p.get("targetPort")) for p in svc["spec"]["ports"]}
            if sports.get("grpc") != (grpc_port, "grpc") or sports.get("metrics") != (metrics_port, "metrics"):
                problems.append(f"{name}: Service ports {sports}")
        if name == "eenn-device":
            want = f"dns:///eenn-server.{NAMESPACE}.svc.cluster.local:{server_grpc_port or 50051}"
            if flags.get("server") != want:
                problems.append(f"{f}: eenn-device --server={flags.get('server')}, expected {want}")
            if flags.get("server_plaintext") not in ("", "true", "1"):
                problems.append(f"{f}: eenn-device must choose --server_plaintext (the server pods are plaintext)")
        report(f"{f}: {w['kind']} {name}: image {c['image']}, {len(argv) - 1} flags all defined by {binary}, "
               f"grpc probes on {grpc_port}, metrics on {metrics_port}, headless Service")
    # The Prometheus DNS discovery for Kubernetes names these Services.
    prom = yaml.safe_load(open(os.path.join(repo, "deploy/prometheus/prometheus-kubernetes.yml")))
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for n in sd["names"]:
                svc_name = n.split(".")[0]
                svc = services.get(svc_name)
                if n != f"{svc_name}.{NAMESPACE}.svc.cluster.local" or svc is None:
                    problems.append(f"prometheus-kubernetes.yml: {n} is no Service of the manifests")
                elif sd["port"] not in [p["port"] for p in svc["spec"]["ports"] if p["name"] == "metrics"]:
                    problems.append(f"prometheus-kubernetes.yml: {n} port {sd['port']} is not its metrics port")
    return problems


# -------------------------------------------------------------------- systemd

def check_systemd(repo, bin_dir, env_override=None, report=print):
    problems = []
    for name in ("server", "device"):
        unit = os.path.join(repo, "deploy/systemd", f"eenn-{name}.service")
        env_path = os.path.join(repo, "deploy/systemd", f"{name}.env")
        d = deploy_lib.unit_directives(unit)
        if d["Service"].get("EnvironmentFile") != [f"/etc/eenn/{name}.env"]:
            problems.append(f"{unit}: EnvironmentFile is not /etc/eenn/{name}.env")
        env = deploy_lib.read_env_file(env_path)
        if env_override:
            env.update(env_override.get(name, {}))
        try:
            argv = deploy_lib.unit_argv(unit, env)
        except KeyError as e:
            problems.append(f"{unit}: {e}")
            continue
        binary = os.path.join(bin_dir, f"eenn-{name}")
        problems += [f"{unit} + {name}.env: {p}" for p in deploy_lib.unknown_flags(argv, binary)]
        if not any(a in ("--plaintext", "--plaintext=true") or a.startswith("--tls_cert=") for a in argv):
            problems.append(f"{unit} + {name}.env: neither TLS flags nor --plaintext (the daemon would refuse)")
        report(f"eenn-{name}.service + {name}.env: {' '.join(argv)}")
    return problems


# ------------------------------------------------------------------- selftest

def selftest(repo, bin_dir):
    """Each check must catch a broken input."""
    quiet = lambda *_: None
    failures = []

    def expect(what, problems, needle):
        if not any(needle in p for p in problems):
            failures.append(f"{what}: expected a problem mentioning '{needle}', got {problems}")

    docs = load_manifests(repo)
    broken = copy.deepcopy(docs)
    dev = [d for d in broken["device.yaml"] if d["kind"] == "DaemonSet"][0]
    dev["spec"]["template"]["spec"]["containers"][0]["args"].append("--no_such_flag=1")
    expect("unknown manifest flag", check_kubernetes(repo, bin_dir, broken, quiet), "--no_such_flag")
    broken = copy.deepcopy(docs)
    srv = [d for d in broken["server.yaml"] if d["kind"] == "Service"][0]
    srv["spec"]["clusterIP"] = "10.0.0.1"
    expect("service not headless", check_kubernetes(repo, bin_dir, broken, quiet), "not headless")
    broken = copy.deepcopy(docs)
    dep = [d for d in broken["server.yaml"] if d["kind"] == "Deployment"][0]
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = 9091
    expect("probe on the wrong port", check_kubernetes(repo, bin_dir, broken, quiet), "readinessProbe on port")
    broken = copy.deepcopy(docs)
    dev = [d for d in broken["device.yaml"] if d["kind"] == "DaemonSet"][0]
    args = dev["spec"]["template"]["spec"]["containers"][0]["args"]
    args[:] = [a if not a.startswith("--server=") else "--server=eenn-server:50051" for a in args]
    expect("device not on the headless service", check_kubernetes(repo, bin_dir, broken, quiet), "expected dns:///")

    tmpdir = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"eenn-deploy-selftest-{os.getpid()}")
    os.makedirs(tmpdir, exist_ok=True)
    try:
        src = open(os.path.join(repo, "deploy/docker/device.Dockerfile")).read()
        cases = [
            ("missing COPY source", src.replace("COPY models/cifar10-resnet18 ", "COPY models/no-such-bundle "),
             "does not exist"),
            ("unknown ENTRYPOINT flag", src.replace('"--listen=0.0.0.0:50052"', '"--listen_address=0.0.0.0:50052"'),
             "--listen_address"),
            ("missing runtime library", src.replace("libopencv-videoio406 ", ""), "libopencv-videoio406"),
            ("package Debian does not have", src.replace("libtorch1.13 ", "libtorch1.13 libtorch9.99 "),
             "apt-cache knows no package libtorch9.99"),
            ("build context without a source directory", src.replace("COPY proto proto\n", ""), "does not COPY proto"),
            ("build package outside setup.sh", src.replace("pkg-config \\", "pkg-config clang \\"), "clang"),
        ]
        for what, text, needle in cases:
            if text == src:
                failures.append(f"{what}: the mutation did not apply")
                continue
            path = os.path.join(tmpdir, "device.Dockerfile")
            open(path, "w").write(text)
            open(path + ".dockerignore", "w").write(
                open(os.path.join(repo, "deploy/docker/device.Dockerfile.dockerignore")).read())
            expect(what, check_docker(repo, bin_dir, {"device.Dockerfile": path}, quiet, False), needle)
    finally:
        for f in glob.glob(os.path.join(tmpdir, "*")):
            os.remove(f)
        os.rmdir(tmpdir)

    expect("unknown systemd flag", check_systemd(
        repo, bin_dir, {"server": {"EENN_SERVER_FLAGS": "--threads=0 --batch=4"}}, quiet), "--batch")
    expect("no TLS choice", check_systemd(repo, bin_dir, {"device": {"EENN_TLS_FLAGS": ""}}, quiet),
           "neither TLS flags nor --plaintext")
    for f in failures:
        print("SELFTEST FAILED:", f)
    if not failures:
        print("selftest: every check caught its broken input")
    return failures


def main():
    repo, bin_dir, what = sys.argv[1:4]
    checks = {"kubernetes": check_kubernetes, "docker": check_docker, "systemd": check_systemd}
    problems = selftest(repo, bin_dir) if what == "selftest" else checks[what](repo, bin_dir)
    for p in problems:
        print("PROBLEM:", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
