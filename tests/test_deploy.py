"""Deploy files (``deploy/``) are checked, not just shipped.

Every YAML file parses; Kubernetes manifests are well formed and of the expected kinds; every
``lakepipe ...`` command line found anywhere (Dockerfile ENTRYPOINT/CMD and usage comments, container
``command``/``args``, shell scripts, systemd ``ExecStart``, README code blocks) parses with the real
argument parser; every job spec those commands name (``jobs/*.yaml`` or a ConfigMap mounted at
``/jobs``) validates against ``schemas/job.schema.json``. The checkers are tested on planted mistakes
so that a green run means something.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
JOBS = ROOT / "jobs"
K8S = DEPLOY / "kubernetes"
EXPECTED_KINDS = {
    "daskcluster.yaml": ["DaskCluster"],
    "daskjob.yaml": ["DaskJob"],
    "cronjob.yaml": ["ConfigMap", "ConfigMap", "PersistentVolumeClaim", "CronJob"],
}
API_VERSIONS = {
    "DaskCluster": "kubernetes.dask.org/v1",
    "DaskJob": "kubernetes.dask.org/v1",
    "CronJob": "batch/v1",
    "ConfigMap": "v1",
    "PersistentVolumeClaim": "v1",
    "Secret": "v1",
}
#: keys dask-jobqueue (>= 0.8) accepts under jobqueue.slurm
SLURM_KEYS = {
    "name",
    "cores",
    "memory",
    "processes",
    "python",
    "interface",
    "death-timeout",
    "local-directory",
    "shared-temp-directory",
    "extra",
    "worker-command",
    "worker-extra-args",
    "shebang",
    "queue",
    "account",
    "walltime",
    "env-extra",
    "job-script-prologue",
    "job-cpu",
    "job-mem",
    "job-extra",
    "job-extra-directives",
    "job-directives-skip",
    "log-directory",
    "scheduler-options",
    "project",
    "nanny",
    "protocol",
    "security",
}


# ---------------------------------------------------------------------------------------- checkers


@dataclass(frozen=True)
class Command:
    """One lakepipe invocation found in a deploy file: its arguments (after ``lakepipe``)."""

    where: str
    args: tuple[str, ...]


LAKEPIPE_WORD = re.compile(r"(^|/)(lakepipe|run_lakepipe\.sh)$")
LAKEPIPE_IMAGE = re.compile(r"(^|/)lakepipe(:[\w.-]+)?$")
WRAPPERS = {
    "exec",
    "sudo",
    "nice",
    "nohup",
    "time",
    "env",
    "flock",
    "srun",
    "sbatch",
    "timeout",
    "xargs",
    "/usr/bin/flock",
    "/usr/bin/env",
    "tini",
    "--",
}
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/bash"}
OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "(", ")", ";;", "2>&1", ">&"}
CRON = re.compile(r"^\s*((@\w+)|([\d*/,-]+\s+){4}[\d*/,-]+)\s+")
DOCKER_VALUE_OPTS = {
    "-e",
    "--env",
    "-p",
    "--publish",
    "-v",
    "--volume",
    "--name",
    "-w",
    "--workdir",
    "-u",
    "--user",
    "--network",
    "--env-file",
    "--mount",
    "--entrypoint",
    "-l",
    "--label",
}


def _tokens(line: str) -> list[str] | None:
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        return list(lex)
    except ValueError:  # unbalanced quotes: prose, not a command
        return None


def _simple_commands(tokens: list[str]) -> list[list[str]]:
    out, cur = [], []
    for t in tokens:
        if t in OPERATORS or set(t) <= set("|&;<>()"):
            if cur:
                out.append(cur)
            cur = []
            # a redirection's target is not a command
            if t in (">", ">>", "<"):
                cur = ["<redirect>"]
        else:
            cur.append(t)
    if cur:
        out.append(cur)
    return [c for c in out if c and c[0] != "<redirect>"]


def commands_in_line(line: str, where: str) -> list[Command]:
    """lakepipe invocations in one shell command line (wrappers, ``sh -c``, cron and docker run handled)."""
    line = CRON.sub("", line)
    tokens = _tokens(line)
    if not tokens:
        return []
    found = []
    for cmd in _simple_commands(tokens):
        i = 0
        while i < len(cmd) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", cmd[i]):
            i += 1  # VAR=value prefixes
        if i >= len(cmd):
            continue
        word = cmd[i]
        if word == "docker" and cmd[i + 1 : i + 2] == ["run"]:
            found += _docker_run(cmd[i + 2 :], where)
            continue
        if not (LAKEPIPE_WORD.search(word) or word in WRAPPERS or word in SHELLS):
            continue
        for j in range(i, len(cmd)):
            if cmd[j] in SHELLS and cmd[j + 1 : j + 2] == ["-c"] and j + 2 < len(cmd):
                found += commands_in_line(cmd[j + 2], where)
                break
            if LAKEPIPE_WORD.search(cmd[j]):
                found.append(Command(where, tuple(cmd[j + 1 :])))
                break
    return found


def _docker_run(tokens: list[str], where: str) -> list[Command]:
    k = 0
    while k < len(tokens) and tokens[k].startswith("-"):
        if tokens[k] == "--entrypoint":
            return []  # dask scheduler / dask worker, not lakepipe
        k += 2 if tokens[k] in DOCKER_VALUE_OPTS else 1
    if k < len(tokens) and LAKEPIPE_IMAGE.search(tokens[k]):
        return [Command(where, tuple(tokens[k + 1 :]))]
    return []


def commands_in_shell_text(text: str, where: str, comments: bool = True) -> list[Command]:
    """Every lakepipe invocation in shell-like text (continuation lines joined).

    Comment lines are read too when indented like usage examples (``#   lakepipe jobs run ...``, two or
    more spaces after the ``#``); ``# lakepipe does ...`` is prose.
    """
    found = []
    text = re.sub(r"\\\n", " ", text)
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            if not comments or not re.match(r"#\s{2,}\S", stripped):
                continue
            stripped = stripped.lstrip("#").strip()
        found += commands_in_line(stripped, f"{where}:{n}")
    return found


def commands_in_dockerfile(text: str, where: str) -> tuple[list[Command], dict]:
    """ENTRYPOINT + CMD (exec form) and the usage lines of its comments."""
    info: dict = {"from": [], "user": [], "entrypoint": None, "cmd": None, "run": []}
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        m = re.match(r"^\s*([A-Z]+)\s+(.*)$", line)
        if not m:
            continue
        instr, rest = m.groups()
        if instr == "FROM":
            info["from"].append(rest.split()[0])
        elif instr == "USER":
            info["user"].append(rest.split()[0])
        elif instr == "RUN":
            info["run"].append(rest)
        elif instr in ("ENTRYPOINT", "CMD"):
            try:
                value = json.loads(rest)
            except ValueError:
                value = shlex.split(rest)  # shell form
            info[instr.lower()] = value
    comments = "\n".join(ln for ln in text.splitlines() if ln.lstrip().startswith("#"))
    found = commands_in_shell_text(comments, where)
    entry = info["entrypoint"] or []
    for k, word in enumerate(entry):
        if LAKEPIPE_WORD.search(word):
            found.append(Command(f"{where}:ENTRYPOINT+CMD", tuple(entry[k + 1 :]) + tuple(info["cmd"] or ())))
    return found, info


def pod_specs(node):
    """Every object holding ``containers`` below ``node`` (pod specs of any workload or Dask resource)."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield node
        for v in node.values():
            yield from pod_specs(v)
    elif isinstance(node, list):
        for v in node:
            yield from pod_specs(v)


def commands_in_manifest(doc: dict, where: str, entrypoint_is_lakepipe: bool = True) -> list[Command]:
    found = []
    for spec in pod_specs(doc):
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            name = f"{where}:{doc.get('kind')}/{c.get('name')}"
            command, args = c.get("command"), [str(a) for a in c.get("args", [])]
            if command is None:
                if entrypoint_is_lakepipe:
                    found.append(Command(name, tuple(args)))
                continue
            command = [str(a) for a in command]
            if LAKEPIPE_WORD.search(command[0]):
                found.append(Command(name, tuple(command[1:] + args)))
            elif command[0] in SHELLS and command[1:2] == ["-c"]:
                found += commands_in_line(" ".join(command[2:] + args), name)
    return found


def readme_code_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the first code line, code) of every shell code block of a Markdown text."""
    return [
        (text[: m.start(1)].count("\n") + 1, m.group(1))
        for m in re.finditer(r"```(?:bash|sh|console|shell)?\n(.*?)```", text, flags=re.S)
    ]


def commands_in_readme(text: str, where: str) -> list[Command]:
    found = []
    for first, block in readme_code_blocks(text):
        block = "\n".join(ln[2:] if ln.startswith("$ ") else ln for ln in block.splitlines())
        for c in commands_in_shell_text(block, where, comments=False):
            n = int(c.where.rsplit(":", 1)[1])
            found.append(Command(f"{where}:{first + n - 1}", c.args))
    return found


def parse_problem(cmd: Command) -> str | None:
    """None when ``lakepipe ARGS`` parses; else what argparse said."""
    import contextlib
    import io

    from lakepipe.cli.main import parse_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse_args(list(cmd.args))
    except SystemExit as exc:
        if exc.code in (0, None) and {"--help", "-h", "--version"} & set(cmd.args):
            return None
        return f"{cmd.where}: `lakepipe {' '.join(cmd.args)}` does not parse: {err.getvalue().strip()[-300:]}"
    return None


def spec_references(cmd: Command) -> list[str]:
    """Job spec paths a command names (``jobs run FILE``, ``jobs validate FILE...``)."""
    import contextlib
    import io

    from lakepipe.cli.main import parse_args

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            args = parse_args(list(cmd.args))
    except SystemExit:
        return []
    if getattr(args, "command", None) != "jobs":
        return []
    return [args.file] if args.action == "run" else list(args.files)


def configmap_specs(docs: list[dict]) -> dict[str, str]:
    """Job specs embedded in ConfigMaps: file name -> YAML text."""
    out = {}
    for d in docs:
        if d.get("kind") == "ConfigMap":
            for key, value in (d.get("data") or {}).items():
                if key.endswith((".yaml", ".yml")):
                    out[key] = value
    return out


def spec_problems(ref: str, embedded: dict[str, str], where: str) -> list[str]:
    """Find the spec a command names (a ConfigMap for /jobs/..., else jobs/<name>) and validate it."""
    from lakepipe.jobs import schema_errors

    name = PurePosixPath(ref).name
    if ref.startswith("/jobs/") and name in embedded:
        text, origin = embedded[name], f"ConfigMap key {name}"
    elif (JOBS / name).is_file():
        text, origin = (JOBS / name).read_text(), f"jobs/{name}"
    else:
        return [f"{where}: job spec {ref} is neither in jobs/ nor in a ConfigMap"]
    errors = schema_errors(yaml.safe_load(text))
    return [f"{where}: {origin}: {e}" for e in errors]


def all_yaml_docs() -> dict[Path, list]:
    return {p: list(yaml.safe_load_all(p.read_text())) for p in sorted(DEPLOY.rglob("*.y*ml"))}


def manifest_docs() -> dict[Path, list[dict]]:
    return {p: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(K8S.glob("*.yaml"))}


def all_commands() -> list[Command]:
    found = []
    dockerfile, _ = commands_in_dockerfile((DEPLOY / "Dockerfile").read_text(), "Dockerfile")
    found += dockerfile
    for path, docs in manifest_docs().items():
        for d in docs:
            found += commands_in_manifest(d, path.name)
    for path in sorted(DEPLOY.rglob("*.sh")):
        found += commands_in_shell_text(path.read_text(), path.name)
    for path in sorted(DEPLOY.rglob("*.service")):
        found += exec_start_commands(path.read_text(), path.name)
    found += commands_in_readme((DEPLOY / "README.md").read_text(), "README.md")
    return found


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for n, raw in enumerate(re.sub(r"\\\n", " ", text).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"line {n}: {line!r} is not KEY=value inside a [Section]")
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def exec_start_commands(text: str, where: str) -> list[Command]:
    found = []
    for value in parse_unit(text).get("Service", {}).get("ExecStart", []):
        found += commands_in_line(value.lstrip("-@+!:"), f"{where}:ExecStart")
    return found


# ------------------------------------------------------------------------------------- the files


def test_every_yaml_file_parses():
    docs = all_yaml_docs()
    assert {p.name for p in docs} >= {"daskcluster.yaml", "daskjob.yaml", "cronjob.yaml", "jobqueue.yaml"}
    for path, items in docs.items():
        assert [d for d in items if d is not None], f"{path} is empty"


def test_kubernetes_manifests_are_well_formed():
    docs = manifest_docs()
    assert {p.name: [d["kind"] for d in items] for p, items in docs.items()} == EXPECTED_KINDS
    names: dict[str, set[str]] = {}
    images = set()
    for path, items in docs.items():
        for d in items:
            assert d.get("apiVersion") == API_VERSIONS[d["kind"]], (path, d["kind"])
            meta = d.get("metadata") or {}
            assert meta.get("name") and meta.get("namespace") == "lakepipe", (path, d["kind"])
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), meta["name"]
            names.setdefault(d["kind"], set()).add(meta["name"])
            for spec in pod_specs(d):
                for c in spec["containers"]:
                    images.add(c["image"])
                    assert c.get("name"), (path, d["kind"])
    assert len(images) == 1, f"every pod should run the same lakepipe image, found {images}"

    # references between manifests resolve; Secrets are the ones the README tells operators to create
    readme = (DEPLOY / "README.md").read_text()
    secrets = set(re.findall(r"create secret generic ([a-z0-9-]+)", readme))
    cron = next(d for d in docs[K8S / "cronjob.yaml"] if d["kind"] == "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cron["spec"]["schedule"].split()) == 5
    for path, items in docs.items():
        text = json.dumps(items)
        for ref in re.findall(r'"configMapRef": \{"name": "([^"]+)"|"configMap": \{"name": "([^"]+)"', text):
            assert (ref[0] or ref[1]) in names["ConfigMap"], (path, ref)
        for ref in re.findall(r'"secretKeyRef": \{"name": "([^"]+)"|"secretRef": \{"name": "([^"]+)"', text):
            assert (ref[0] or ref[1]) in secrets, (path, ref)
        for ref in re.findall(r'"claimName": "([^"]+)"', text):
            assert ref in names["PersistentVolumeClaim"], (path, ref)

    # Dask processes run `dask scheduler` / `dask worker`; a DaskJob has a job pod and a cluster
    for items in docs.values():
        for d in items:
            for spec in pod_specs(d):
                for c in spec["containers"]:
                    if c.get("command"):
                        assert c["command"][:2] in (["dask", "scheduler"], ["dask", "worker"]), c["command"]
    daskjob = docs[K8S / "daskjob.yaml"][0]["spec"]
    assert daskjob["job"]["spec"]["containers"] and daskjob["cluster"]["spec"]["worker"]["replicas"] >= 1
    assert docs[K8S / "daskcluster.yaml"][0]["spec"]["scheduler"]["service"]["ports"][0]["port"] == 8786


def test_secrets_come_from_secrets_only():
    """Credentials and the catalog URL come from Secrets; no manifest holds a literal credential."""
    for path, items in manifest_docs().items():
        for d in items:
            for spec in pod_specs(d):
                for c in spec["containers"]:
                    for e in c.get("env", []):
                        if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CATALOG", e["name"]):
                            assert "valueFrom" in e and "value" not in e, (path, e["name"])
            if d["kind"] == "ConfigMap":
                assert not any(
                    re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CATALOG", k) for k in d["data"]
                ), path


def test_every_lakepipe_command_in_deploy_files_parses():
    commands = all_commands()
    sources = {c.where.split(":")[0] for c in commands}
    # each kind of file contributes commands, so the checker is not vacuously green
    assert sources >= {
        "Dockerfile",
        "daskjob.yaml",
        "cronjob.yaml",
        "run_lakepipe.sh",
        "lakepipe-ingest.service",
        "README.md",
    }, sources
    assert len(commands) >= 10
    problems = [p for c in commands if (p := parse_problem(c))]
    assert not problems, "\n".join(problems)


def test_job_specs_referenced_by_deploy_files_validate():
    docs = [d for items in manifest_docs().values() for d in items]
    embedded = configmap_specs(docs)
    assert "nightly-lesions.yaml" in embedded
    refs = [(r, c.where) for c in all_commands() for r in spec_references(c)]
    assert any(r.startswith("/jobs/") for r, _ in refs) and len(refs) >= 4
    problems = [p for r, where in refs for p in spec_problems(r, embedded, where)]
    assert not problems, "\n".join(problems)
    # the ConfigMap's copy is the spec in jobs/ (no drift between the two)
    for name, text in embedded.items():
        assert yaml.safe_load(text) == yaml.safe_load((JOBS / name).read_text()), name


def test_every_example_job_spec_validates():
    from lakepipe.jobs import schema_errors

    for path in sorted(JOBS.glob("*.yaml")):
        assert schema_errors(yaml.safe_load(path.read_text())) == [], path


def test_dockerfile():
    found, info = commands_in_dockerfile((DEPLOY / "Dockerfile").read_text(), "Dockerfile")
    assert info["from"] and info["from"][0].startswith("python:3.11-slim")
    assert info["user"] and info["user"][-1].split(":")[0] not in ("root", "0")
    assert any(re.search(r"pip install\s+\"?\.(\[[\w,]+\])?\"?", r) for r in info["run"]), info["run"]
    assert info["entrypoint"] and LAKEPIPE_WORD.search(info["entrypoint"][-1])
    text = (DEPLOY / "Dockerfile").read_text()
    # the image needs the schemas to validate job specs, and says where they are
    assert "COPY schemas" in text and "LAKEPIPE_SCHEMA_DIR" in text
    # everything the Dockerfile copies exists in the build context
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", text, flags=re.M):
        for part in src.split():
            if not part.startswith("--"):
                assert (ROOT / part).exists(), f"COPY {part}: not in the repository"


def test_systemd_units():
    service = parse_unit((DEPLOY / "systemd" / "lakepipe-ingest.service").read_text())
    timer = parse_unit((DEPLOY / "systemd" / "lakepipe-ingest.timer").read_text())
    assert {"Unit", "Service", "Install"} <= set(service)
    assert service["Service"]["ExecStart"] and service["Service"]["Type"] == ["oneshot"]
    assert service["Service"]["User"] != ["root"]
    assert {"Unit", "Timer", "Install"} <= set(timer)
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Unit"] == ["lakepipe-ingest.service"]
    if shutil.which("systemd-analyze"):
        for spec in timer["Timer"]["OnCalendar"]:
            res = subprocess.run(["systemd-analyze", "calendar", spec], capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
        units = [str(DEPLOY / "systemd" / f"lakepipe-ingest.{ext}") for ext in ("service", "timer")]
        res = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True
        )
        # the lakepipe binary is not installed here; anything else systemd dislikes is a failure
        other = [
            ln
            for ln in (res.stderr + res.stdout).splitlines()
            if ln.strip() and "is not executable" not in ln and "sysinit.target" not in ln
        ]
        assert not other, other


def test_slurm_files():
    config = yaml.safe_load((DEPLOY / "slurm" / "jobqueue.yaml").read_text())
    slurm = config["jobqueue"]["slurm"]
    assert set(slurm) <= SLURM_KEYS, set(slurm) - SLURM_KEYS
    assert slurm["cores"] >= slurm["processes"] >= 1 and slurm["memory"]
    script = (DEPLOY / "slurm" / "run_lakepipe.sh").read_text()
    res = subprocess.run(
        ["bash", "-n", str(DEPLOY / "slurm" / "run_lakepipe.sh")], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    lines = script.splitlines()
    first_code = next(i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("#"))
    assert all(i < first_code for i, ln in enumerate(lines) if ln.startswith("#SBATCH")), "#SBATCH after code"
    (snippet,) = re.findall(r"<<'PY'\n(.*?)\nPY\n", script, flags=re.S)
    compile(snippet, "run_lakepipe.sh:python", "exec")
    assert "SLURMCluster" in snippet and '"--scheduler"' in snippet


# ------------------------------------------------------------------------- the checkers can fail


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "runn", "/jobs/nightly-lesions.yaml"),
        ("run", "afnm", "--cohrt", "stroke", "--atlas", "x"),
        ("jobs", "run"),
        ("--lake",),
        ("ingest", "lesions", "bids", "--weigthed"),
    ],
)
def test_parse_checker_catches_bad_commands(args):
    assert parse_problem(Command("planted", args)) is not None


def test_checkers_find_planted_mistakes(tmp_path):
    # a container with a misspelt sub-command
    bad = yaml.safe_load((K8S / "daskjob.yaml").read_text())
    bad["spec"]["job"]["spec"]["containers"][0]["args"] = ["jobs", "runn", "/jobs/nightly-lesions.yaml"]
    (cmd,) = [c for c in commands_in_manifest(bad, "planted.yaml") if "runn" in c.args]
    assert parse_problem(cmd) and "invalid choice: 'runn'" in parse_problem(cmd)
    # a unit whose ExecStart has an unknown option
    unit = (DEPLOY / "systemd" / "lakepipe-ingest.service").read_text()
    unit = unit.replace("jobs run", "jobs run --dryrun")
    (cmd,) = exec_start_commands(unit, "planted.service")
    assert parse_problem(cmd) and "--dryrun" in parse_problem(cmd)
    # README blocks, shell wrappers, cron lines and docker run are all read
    readme = (
        "text\n```bash\nLAKEPIPE_LAKE=x lakepipe run afnm --cohort a\n"
        "30 2 * * * /usr/bin/flock -n /tmp/l /bin/sh -c 'exec /opt/v/bin/lakepipe jobs runn a.yaml'"
        " >> log 2>&1\n"
        "docker run --rm -e X ghcr.io/example/lakepipe:1 jobs validate\n```\n"
    )
    cmds = commands_in_readme(readme, "planted.md")
    assert [c.args[:2] for c in cmds] == [("run", "afnm"), ("jobs", "runn"), ("jobs", "validate")]
    assert all(parse_problem(c) for c in cmds)  # missing --atlas, bad choice, no FILE
    # prose and other programs are not mistaken for lakepipe commands
    assert (
        commands_in_readme(
            "```bash\nuseradd --create-home lakepipe\ndocker run --entrypoint dask "
            "lakepipe:1 scheduler\necho 'lakepipe jobs x'\n```\n",
            "x",
        )
        == []
    )
    # a spec reference to nowhere, and an invalid embedded spec
    assert spec_problems("/jobs/missing.yaml", {}, "planted")
    broken = (JOBS / "nightly-lesions.yaml").read_text().replace("kind: afnm", "kind: afmn")
    problems = spec_problems("/jobs/nightly-lesions.yaml", {"nightly-lesions.yaml": broken}, "planted")
    assert problems and "steps[1].kind: 'afmn' is not one of" in problems[0]
    # a Dockerfile running as root, and a unit without ExecStart
    root_image = 'FROM python:3.11-slim\nRUN pip install .\nENTRYPOINT ["lakepipe"]\n'
    _, info = commands_in_dockerfile(root_image, "x")
    assert info["user"] == []
    assert "ExecStart" not in parse_unit("[Unit]\nDescription=x\n[Service]\nType=oneshot\n")["Service"]
    with pytest.raises(ValueError):
        parse_unit("ExecStart=/bin/true\n")
