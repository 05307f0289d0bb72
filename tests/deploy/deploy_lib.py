"""Helpers shared by the deploy/ checks: systemd environment files and ExecStart
expansion, the flags a binary defines (--helpfull), free ports."""

import re
import shlex
import socket
import subprocess


def read_env_file(path):
    """Parses a systemd EnvironmentFile: VAR=value lines, '#' comments, optional
    single or double quotes around the value."""
    env = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#") or line.startswith(";"):
                continue
            m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line)
            if not m:
                raise ValueError(f"{path}:{n}: not VAR=value: {line}")
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            env[m.group(1)] = value
    return env


def unit_directives(path):
    """{section: {key: [values]}} of a systemd unit file."""
    sections, current = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def expand_exec(command, env):
    """Expands an ExecStart= command line as systemd does: a word that is exactly
    $VAR becomes the value split on whitespace (none when empty), ${VAR} inside a
    word is replaced by the value as one word. Unknown variables are errors."""
    def lookup(name):
        if name not in env:
            raise KeyError(f"ExecStart uses ${name}, which the environment file does not set")
        return env[name]

    argv = []
    for word in shlex.split(command):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv.extend(lookup(m.group(1)).split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda g: lookup(g.group(1)), word))
    return argv


def unit_argv(unit_path, env):
    """The argv systemd would run for the unit's ExecStart with this environment."""
    execs = unit_directives(unit_path)["Service"]["ExecStart"]
    if len(execs) != 1:
        raise ValueError(f"{unit_path}: expected one ExecStart, found {len(execs)}")
    return expand_exec(execs[0], env)


_helpfull_cache = {}


def binary_flags(binary):
    """{flag name: default text} of an absl binary, from --helpfull."""
    if binary not in _helpfull_cache:
        r = subprocess.run([binary, "--helpfull"], capture_output=True, text=True, timeout=60)
        text = r.stdout + r.stderr
        flags = {}
        for m in re.finditer(r"^\s+--([A-Za-z0-9_]+) \(.*?\);\s+default: (.*?);\s*$", text, re.M | re.S):
            flags[m.group(1)] = m.group(2)
        if "bundle" not in flags and "device" not in flags:
            raise RuntimeError(f"{binary} --helpfull listed no flags:\n{text[:2000]}")
        _helpfull_cache[binary] = flags
    return _helpfull_cache[binary]


def unknown_flags(argv, binary):
    """Arguments of argv[1:] naming flags that `binary` does not define, with the
    reason. Handles --name=value, --name value, --noname for booleans."""
    flags = binary_flags(binary)
    problems = []
    args = argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("--"):
            problems.append(f"'{a}' is not a --flag")
            continue
        name, eq, value = a[2:].partition("=")
        boolean = lambda n: flags.get(n) in ("true", "false")
        if name in flags:
            if not eq and not boolean(name):
                if i >= len(args):
                    problems.append(f"--{name} has no value")
                else:
                    i += 1  # --name value
            elif eq and boolean(name) and value not in ("true", "false", "1", "0"):
                problems.append(f"--{name}={value}: not a boolean")
        elif name.startswith("no") and boolean(name[2:]) and not eq:
            pass
        else:
            problems.append(f"--{name}: no such flag in {binary}")
    return problems


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
