"""Every command line of README.md and docs/*.md, checked as written (issue 20: the docs cannot drift).

    python -m tests.docs_commands --list       # each command with its class and the reason
    python -m tests.docs_commands              # check them all (tests/test_docs_commands.py runs this)

Each line of a fenced ``bash`` block is a command (``\\`` continuations joined, ``a && b`` split, the
``# comment`` kept for its arrow). Every command falls in one class (:func:`classify`, first rule wins):

- ``ci``: ``bash scripts/setup_env.sh`` and ``python -m pytest``: what ``.ci/run`` runs (checked to be the same);
- ``compose``: a Hydra entry point that is multi-node, GPU-only, more processes than this machine runs,
  a training recipe or evaluation of minutes, or given files users provide (placeholders such as
  ``/ckpt/...``, ``s3://...``, ``<run dir>``, ``...``): its config is composed with the line's exact
  overrides (every key and config-group name validated, each sweep value), its launcher flags parsed by
  torchrun's / DeepSpeed's own parsers;
- ``parse``: an argparse command of minutes (benchmarks) or with placeholders: its arguments go through
  the module's own parser, nothing runs;
- ``serve``: ``launch/view.py`` without ``--static``: started, then stopped with SIGTERM once serving;
- ``run`` (the default; also the memory planner, which only computes): executed as written, in
  order, in one scratch copy of the repository (code symlinked; ``checkpoints/``, ``examples/``,
  ``docs/`` copied), with step and scene counts divided by 10 (at most 5; :data:`STEP_KEYS`,
  :data:`ARG_REDUCTIONS`), each multi-process launcher and each distinct line run once (a repeat is
  composed), and a free ``--master_port`` for torchrun / deepspeed. Python entry points run in this
  process (imports paid once); launchers and shell scripts as subprocesses. Files a user brings
  (``clip.mp4``, ``first_frame_views/``)
  are made first (:func:`make_user_files`).

Also checked: an arrow ``-> path`` in a line's comment names a file that the line writes (run: it
exists afterwards; otherwise the path is the line's ``publish_to`` or lies under its ``RUN_DIR``); a
line that writes into ``checkpoints/`` or ``examples/`` says ``publish_overwrite=true``; after all runs
``checkpoints/`` and ``examples/`` are unchanged and every new file lies where git ignores it; no
command sits outside a fenced block.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "shell", "console"}
PYTHONS = {"python", "python3", ".venv/bin/python"}
COPIED = ("checkpoints", "examples", "docs")  # copied into the scratch tree (written files are detected there)
PROTECTED = ("checkpoints", "examples")  # no command may change them
STEP_KEYS = ("train.steps", "sampler.steps", "benchmark.num_scenes")  # Hydra counts reduced when run: v // 10, in [1, 5]
ARG_REDUCTIONS = {"--num-scenes": "1"}  # argparse flags replaced when run
RUN_ONCE = {"launch/eval.py"}  # ~20 s per run even reduced: the first line runs, the others are composed
PLACEHOLDER = re.compile(r"/ckpt/|s3://|(^|[=\s])/data/|/shared/|/path/|<[^>]+>|\.\.\.|\$[A-Z_]+|\b[ab]\.safetensors\b|videos\.txt|hostfile")
RECIPES = re.compile(r"--config-name[ =](train_dit_base|train_dit_4d_tiny|train_recon_4d_tiny_\w+|eval_shipped)\b|benchmark=ablation_")
GPU = re.compile(r"device=cuda|--device cuda|dtype=bfloat16|--dtype bf16|wan2\.1-t2v|vggt-1b")
MULTI_NODE = re.compile(r"--hostfile|--nnodes|--num_nodes|--node_rank")
SHIPPED = re.compile(r"(?:publish_to=|--out )((?:checkpoints|examples)/\S*)")
ARROW = re.compile(r"->\s*(\S+)")


@dataclasses.dataclass
class Command:
    """One command of a docs file: where it is, its environment assignments and argv, its class."""

    file: str
    line: int
    text: str  # the command as written (comment removed)
    comment: str
    env: dict[str, str]
    argv: list[str]  # placeholders replaced by parseable dummies (:func:`_dummies`)
    raw: str = ""  # the whole line as written (comment removed)
    kind: str = ""
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _split_comment(line: str) -> tuple[str, str]:
    """``(code, comment)`` of a shell line: the comment starts at the first unquoted ``#`` after a blank."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def _dummies(code: str) -> str:
    """Placeholders made parseable (the line stays a placeholder line): ``<run dir>`` -> ``run_dir``, ``$NODE_RANK`` -> ``0``."""
    code = re.sub(r"<([^<>]+)>", lambda m: "<" + m.group(1).replace(" ", "_") + ">", code)
    return re.sub(r"\$[A-Z_]+\b", "0", code.replace("<", "").replace(">", "")) if re.search(r"<|\$[A-Z_]", code) else code


def parse_file(rel: str) -> tuple[list[Command], list[str]]:
    """The commands of one markdown file, and the lines that look like commands outside fenced blocks."""
    commands, unfenced = [], []
    fence, pending, start = None, "", 0
    for n, raw in enumerate((ROOT / rel).read_text().splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip().lower() or "text")
            continue
        if fence is None:
            if re.match(r"^ {4,}(python|torchrun|deepspeed|bash) ", raw):
                unfenced.append(f"{rel}:{n}: {stripped}")
            continue
        if fence not in SHELLS:
            continue
        if not pending:
            start = n
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line, pending = pending + stripped, ""
        code, comment = _split_comment(line)
        if not code:
            continue
        tokens = shlex.split(_dummies(code))
        parts = [list(g) for is_and, g in itertools.groupby(tokens, lambda t: t == "&&") if not is_and]
        for part in parts:
            env = {}
            while part and re.match(r"^[A-Z_][A-Z0-9_]*=", part[0]):
                key, value = part.pop(0).split("=", 1)
                env[key] = value
            commands.append(Command(rel, start, shlex.join([*(f"{k}={v}" for k, v in env.items()), *part]), comment, env, part, code))
    return commands, unfenced


def parse_all() -> tuple[list[Command], list[str]]:
    """Every command of README.md and docs/*.md (in that order), each classified; plus unfenced command lines."""
    commands, unfenced = [], []
    for rel in DOCS:
        c, u = parse_file(rel)
        commands += c
        unfenced += u
    first_run: dict[str, Command] = {}
    for cmd in commands:
        cmd.kind, cmd.reason = classify(cmd)
        launcher, largs, target, _ = split_program(cmd.argv)
        key = ("several processes" if _processes(launcher, largs) > 1 else target if target in RUN_ONCE else cmd.text)
        if cmd.kind == "run" and key in first_run:
            cmd.kind, cmd.reason = "compose", f"cost: {key if key != cmd.text else 'the same line'} already runs at {first_run[key].where}"
        elif cmd.kind == "run":
            first_run[key] = cmd
    return commands, unfenced


def split_program(argv: list[str]) -> tuple[str, list[str], Optional[str], list[str]]:
    """``(launcher, launcher_args, target, args)``: launcher is python | torchrun | deepspeed | bash | <other>;
    target is a script path or ``-m module``."""
    prog, rest = argv[0], argv[1:]
    if prog in PYTHONS:
        if rest[:1] == ["-m"]:
            return "python", [], "-m " + rest[1], rest[2:]
        return "python", [], rest[0] if rest else None, rest[1:]
    if prog in ("torchrun", "deepspeed"):
        i = next((k for k, t in enumerate(rest) if t.endswith(".py")), len(rest))
        return prog, rest[:i], rest[i] if i < len(rest) else None, rest[i + 1:]
    if prog == "bash":
        return "bash", [], rest[0] if rest else None, rest[1:]
    return prog, [], None, rest


def is_hydra(target: Optional[str]) -> bool:
    """Whether ``target`` is a script with a Hydra entry point."""
    if not target or target.startswith("-m ") or not (ROOT / target).is_file():
        return False
    return "@hydra.main" in (ROOT / target).read_text()


def _processes(launcher: str, largs: list[str]) -> int:
    for flag in ("--nproc_per_node", "--num_gpus", "--nproc-per-node"):
        if flag in largs:
            return int(largs[largs.index(flag) + 1])
    return 1


def classify(cmd: Command) -> tuple[str, str]:
    """``(kind, reason)`` of a command (see the module docstring)."""
    text = cmd.text
    launcher, largs, target, _ = split_program(cmd.argv)
    hydra = is_hydra(target)
    fallback = "compose" if hydra else "parse"
    if re.fullmatch(r"bash scripts/setup_env\.sh", text) or re.search(r"-m pytest(\s|$)", text):
        return "ci", "CI runs exactly this (.ci/run)"
    if launcher not in ("python", "torchrun", "deepspeed", "bash"):
        return "unknown", f"program {launcher!r}: classify it in tests/docs_commands.py"
    if target and target.startswith("-m eval.perf.memory_plan"):
        return "run", "the memory planner: arithmetic on measured numbers, a second"
    if MULTI_NODE.search(text):
        return fallback, "several machines"
    words = re.sub(r"""(negative_)?prompt=("[^"]*"|'[^']*'|\S+)""", "", cmd.raw)  # a prompt is text, not a placeholder
    if (m := PLACEHOLDER.search(words)) is not None:
        return fallback, f"paths users provide ({m.group(0).strip(' =')!r})"
    if GPU.search(text):
        return fallback, "GPU-only or GPU-scale models"
    if _processes(launcher, largs) > 2:
        return fallback, f"{_processes(launcher, largs)} processes (this machine runs 2)"
    if SHIPPED.search(text):
        return fallback, "replaces a shipped file (a recipe of minutes)"
    if RECIPES.search(text):
        return fallback, "a training recipe or evaluation of minutes"
    if re.search(r"(^|[\s=])/tmp/", text):
        return fallback, "writes outside the repository (/tmp)"
    if "gpu_checks" in text:
        return "parse", "GPU-only checks (they skip without CUDA)"
    if target and target.startswith("-m eval.perf"):
        return "parse", "a benchmark of minutes (eval.perf --quick times them)"
    if target == "launch/view.py" and "--static" not in cmd.argv:
        return "serve", "serves until Ctrl-C: started, stopped with SIGTERM"
    return "run", "as written, step and scene counts reduced"


# ---------------------------------------------------------------------------------------------- checks


class _Parsed(Exception):
    """Raised by the patched ``ArgumentParser.parse_args`` once the arguments parsed."""


@contextlib.contextmanager
def _captured(log: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2: children and C code too) to ``log``."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


@contextlib.contextmanager
def _environment(env: dict[str, str], argv: list[str]):
    """``os.environ`` updated with ``env`` and ``sys.argv = argv``, both restored afterwards."""
    saved_env, saved_argv = dict(os.environ), sys.argv
    os.environ.update(env)
    sys.argv = argv
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv


def _config_name(target: str, args: list[str]) -> tuple[str, list[str]]:
    """The Hydra config a script composes (``--config-name`` wins) and the remaining overrides."""
    name = re.search(r'config_name="(\w+)"', (ROOT / target).read_text()).group(1)
    rest, it = [], iter(args)
    for a in it:
        if a in ("--config-name", "-cn"):
            name = next(it)
        elif a.startswith("--config-name="):
            name = a.split("=", 1)[1]
        elif a != "-m" and a != "--multirun":
            rest.append(a)
    return name, rest


def compose_line(target: str, args: list[str], env: dict[str, str], configs: Path):
    """Compose the line's config for every sweep combination (Hydra's own parser expands ``a=x,y``);
    returns the first composed config. Raises on an unknown key, group or value."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    name, overrides = _config_name(target, [a for a in args if a != "..."])  # a bare "..." stands for more overrides
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
               for o in parsed]
    first = None
    GlobalHydra.instance().clear()
    with _environment({"RUN_STAMP": "compose", **env}, sys.argv), initialize_config_dir(str(configs), version_base="1.3"):
        for combo in itertools.islice(itertools.product(*choices), 8):
            cfg = compose(name, overrides=list(combo), return_hydra_config=True)
            OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
            OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=True)
            first = first or cfg
    GlobalHydra.instance().clear()
    return first


def parse_launcher(launcher: str, largs: list[str], target: str) -> None:
    """Launcher flags through torchrun's / DeepSpeed's own argument parsers."""
    if launcher == "torchrun":
        from torch.distributed.run import get_args_parser

        get_args_parser().parse_args([*largs, target])
    elif launcher == "deepspeed":
        from deepspeed.launcher.runner import parse_args

        parse_args([*largs, target])


def _run_as_main(target: str, args: list[str], env: dict[str, str]) -> None:
    """``python <target> <args>`` (a script path or ``-m module``) in this process, with ``env``."""
    import runpy

    with _environment(env, [target.removeprefix("-m "), *args]):
        if target.startswith("-m "):
            runpy.run_module(target[3:], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")


def parse_args_only(target: str, args: list[str], env: dict[str, str]) -> None:
    """Run a Python command up to its ``parse_args`` call (argparse errors -> SystemExit 2)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *a, **k):
        original(self, *a, **k)
        raise _Parsed

    argparse.ArgumentParser.parse_args = parse_then_stop
    try:
        _run_as_main(target, args, env)
        raise AssertionError("the command finished without parsing arguments with argparse")
    except _Parsed:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original


def reduced(args: list[str], hydra_cfg) -> list[str]:
    """The line's arguments with step counts divided by 10 (:data:`STEP_KEYS` from the composed config,
    :data:`ARG_REDUCTIONS` for argparse flags)."""
    out = list(args)
    if hydra_cfg is not None:
        from omegaconf import OmegaConf

        for key in STEP_KEYS:
            value = OmegaConf.select(hydra_cfg, key, default=None)
            if isinstance(value, int) and value > 1:
                out = [a for a in out if not a.startswith(key + "=")] + [f"{key}={min(5, max(1, value // 10))}"]
    for flag, value in ARG_REDUCTIONS.items():
        if flag in out:
            out[out.index(flag) + 1] = value
    return out


def _run_python(target: str, args: list[str], env: dict[str, str], serve: bool) -> None:
    """A Python command in this process (SystemExit != 0 raises); ``serve``: SIGTERM it once it serves."""
    from hydra.core.global_hydra import GlobalHydra

    stop = threading.Event()
    if serve:
        previous = signal.signal(signal.SIGTERM, lambda *_: None)  # until the viewer installs its own handler

        def poke():  # SIGTERM every second from the 3rd: the first one after the viewer serves stops it
            while not stop.wait(3.0 if not poke.sent else 1.0):
                poke.sent = True
                os.kill(os.getpid(), signal.SIGTERM)
        poke.sent = False
        threading.Thread(target=poke, daemon=True).start()
    try:
        _run_as_main(target, args, env)
    except SystemExit as e:
        if e.code not in (None, 0):
            raise RuntimeError(f"exit status {e.code}") from None
    finally:
        stop.set()
        if serve:
            signal.signal(signal.SIGTERM, previous)
        GlobalHydra.instance().clear()


def _free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _run_subprocess(launcher: str, largs: list[str], target: str, args: list[str], env: dict[str, str], log: Path) -> None:
    exe = {"torchrun": [sys.executable, "-m", "torch.distributed.run"], "deepspeed": [sys.executable, "-m", "deepspeed.launcher.runner"],
           "bash": ["bash"]}[launcher]
    port = ["--master_port", _free_port()] if launcher != "bash" and "--master_port" not in largs else []
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable}
    full_env.pop("RUN_STAMP", None)
    with open(log, "ab") as f:
        proc = subprocess.run([*exe, *largs, *port, target, *args], env=full_env, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}")


def make_user_files(scratch: Path) -> None:
    """What the docs assume a user has: ``clip.mp4`` (a 17-frame 64 x 64 held-out procedural video) and
    ``first_frame_views/`` (the 3 views of a held-out scene's first moment)."""
    import imageio.v3 as iio

    from fourd.data.procedural import procedural_scene
    from fourd.formats import save_video

    scene = procedural_scene(1_005_001, 3, 17, 64, 64, "dynamic")
    save_video(str(scratch / "clip.mp4"), scene.frames[0].permute(0, 2, 3, 1))
    (scratch / "first_frame_views").mkdir()
    for v in range(3):
        iio.imwrite(scratch / "first_frame_views" / f"view_{v:02d}.png", (scene.frames[v, 0].permute(1, 2, 0) * 255).round().byte().numpy())


def make_scratch(scratch: Path) -> None:
    """A working copy: top-level entries symlinked, :data:`COPIED` copied, outputs absent."""
    for entry in ROOT.iterdir():
        if entry.name.startswith(".") or entry.name in ("runs", "outputs", "multirun", "data", "__pycache__") or entry.name.endswith(".egg-info"):
            continue
        if entry.name in COPIED:
            shutil.copytree(entry, scratch / entry.name, symlinks=True)
        else:
            (scratch / entry.name).symlink_to(entry)
    (scratch / ".ci").symlink_to(ROOT / ".ci")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _arrow_problem(cmd: Command, ran: bool, scratch: Path) -> Optional[str]:
    """None when the comment's arrow (if any) names a file the line writes, else why not."""
    m = ARROW.search(cmd.comment)
    if m is None:
        return None
    path = m.group(1).rstrip(".,;:)")
    if ran:
        return None if (scratch / path).exists() else f"the arrow names {path}, which the run did not write"
    named = [a.split("=", 1)[1] for a in cmd.argv if a.startswith("publish_to=")] + [v for k, v in cmd.env.items() if k == "RUN_DIR"]
    return None if any(path == n or path.startswith(n.rstrip("/") + "/") for n in named) else \
        f"the arrow names {path}, which is neither the line's publish_to nor under its RUN_DIR"


def check(cmd: Command, scratch: Path, log: Path) -> str:
    """Check one command (see the module docstring); returns what was done (raises on a problem)."""
    launcher, largs, target, args = split_program(cmd.argv)
    if cmd.kind == "unknown":
        raise RuntimeError(cmd.reason)
    if cmd.kind == "ci":
        ci = (ROOT / ".ci" / "run").read_text()
        if cmd.text.replace(".venv/bin/python", "").strip() not in ci.replace(".venv/bin/python", ""):
            raise RuntimeError(f"{cmd.text!r} is not what .ci/run runs")
        return "matches .ci/run"
    if SHIPPED.search(cmd.text) and "publish_overwrite=true" not in cmd.argv:
        raise RuntimeError("writes into checkpoints/ or examples/ without asking for it (publish_overwrite=true)")
    if launcher != "bash" and target and not target.startswith("-m ") and not (scratch / target).exists():
        raise RuntimeError(f"no such script: {target}")
    hydra = is_hydra(target)
    cfg = compose_line(target, args, cmd.env, scratch / "configs") if hydra else None
    parse_launcher(launcher, largs, target)
    if cmd.kind == "compose":
        done = "composed"
    elif cmd.kind == "parse":
        if launcher == "python" and not hydra:
            parse_args_only(target, args, cmd.env)
        elif launcher == "bash":
            subprocess.run(["bash", "-n", target], check=True)
        done = "arguments parsed"
    else:
        args = reduced(args, cfg)
        env = {**cmd.env, "RUN_STAMP": f"docs_{cmd.file.replace('/', '_')}_{cmd.line}"}
        if launcher == "python":
            with _captured(log):
                _run_python(target, args, env, serve=cmd.kind == "serve")
        else:
            _run_subprocess(launcher, largs, target, args, env, log)
        done = "ran: " + shlex.join([*largs, target, *args])
    problem = _arrow_problem(cmd, cmd.kind == "run", scratch)
    if problem:
        raise RuntimeError(problem)
    return done


def check_all(commands: list[Command], scratch: Path, only: Optional[str] = None) -> list[dict]:
    """Check every command in order in ``scratch``; rows ``{where, kind, reason, seconds, ok, detail}``,
    plus one row per tree-wide check (protected folders unchanged, new files ignored by git)."""
    make_scratch(scratch)
    os.chdir(scratch)
    make_user_files(scratch)
    before = {d: _digest(scratch / d) for d in PROTECTED}
    start_files = {p for p in scratch.rglob("*") if p.is_file()}
    rows = []
    for i, cmd in enumerate(commands):
        if only and not re.search(only, f"{cmd.where} {cmd.text}"):
            continue
        log = scratch / ".logs" / f"{i:03d}.log"
        log.parent.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        try:
            detail, ok = check(cmd, scratch, log), True
        except BaseException as e:  # noqa: BLE001 - every failure is reported, the next command still runs
            if isinstance(e, KeyboardInterrupt):
                raise
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            detail, ok = f"{type(e).__name__}: {e}\n{tail}", False
        rows.append({"where": cmd.where, "command": cmd.text, "kind": cmd.kind, "reason": cmd.reason,
                     "seconds": round(time.perf_counter() - t0, 1), "ok": ok, "detail": detail})
        print(f"[docs] {'ok  ' if ok else 'FAIL'} {cmd.where:24s} {cmd.kind:8s} {rows[-1]['seconds']:6.1f} s  {cmd.text[:90]}", flush=True)
    after = {d: _digest(scratch / d) for d in PROTECTED}
    changed = sorted(f"{d}/{k}" for d in PROTECTED for k in set(before[d]) | set(after[d]) if before[d].get(k) != after[d].get(k))
    rows.append({"where": "tree", "command": "checkpoints/ and examples/ unchanged", "kind": "check", "reason": "", "seconds": 0.0,
                 "ok": not changed, "detail": f"changed: {sorted(changed)}" if changed else "unchanged"})
    new = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*") if p.is_file() and p not in start_files
                 and not p.relative_to(scratch).parts[0].startswith(".") and p.relative_to(scratch).parts[0] not in ("clip.mp4", "first_frame_views"))
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        rows.append({"where": "tree", "command": "new files are ignored by git", "kind": "check", "reason": "no git checkout here",
                     "seconds": 0.0, "ok": True, "detail": "not checked"})
        return rows
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(new), capture_output=True, text=True)
    ignored = set(proc.stdout.split())
    tracked_dirs = [n for n in new if n not in ignored]
    rows.append({"where": "tree", "command": "new files are ignored by git", "kind": "check", "reason": f"{len(new)} new files", "seconds": 0.0,
                 "ok": not tracked_dirs, "detail": f"not ignored: {tracked_dirs[:20]}" if tracked_dirs else "all ignored"})
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--list", action="store_true", help="print every command with its class and reason, run nothing")
    p.add_argument("--only", default=None, help="regex on 'file:line command': check only those (the tree checks still run)")
    p.add_argument("--keep", default=None, help="scratch directory to use and keep (default: a temporary one, removed)")
    p.add_argument("--json", default=None, help="write the result rows here")
    a = p.parse_args(argv)
    commands, unfenced = parse_all()
    if a.list:
        for c in commands:
            print(f"{c.where:24s} {c.kind:8s} {c.reason:55s} {c.text}")
        print("\n".join(f"UNFENCED {u}" for u in unfenced))
        return 0
    workdir = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="docs_commands_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = check_all(commands, workdir, a.only)
    finally:
        os.chdir(ROOT)
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows += [{"where": u.split(": ", 1)[0], "command": u, "kind": "unfenced", "reason": "put commands in ```bash blocks", "seconds": 0.0,
              "ok": False, "detail": ""} for u in unfenced]
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    failed = [r for r in rows if not r["ok"]]
    for r in failed:
        print(f"\nFAILED {r['where']} ({r['kind']}: {r['reason']}): {r['command']}\n{r['detail']}")
    print(f"[docs] {len(rows) - len(failed)} ok, {len(failed)} failed, {sum(r['seconds'] for r in rows):.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
