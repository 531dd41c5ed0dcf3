"""Atomic generation under SIGKILL: every package is the old one or the new one, never a mix.

A spec set (the fixture specs plus renamed copies, so that one run swaps several packages)
is generated twice into reference trees: as it is ("old") and with every spec but one
changed ("new"). Then, over and over, ``connector-builder generate`` runs in a subprocess
towards one of the two sets (alternating, so that each run has packages to rewrite) and is
SIGKILLed at a random moment, mostly while it is swapping packages in (the window is
measured first). The subprocess runs the console script's entry point
(``builder.cli.main``) with the generator's dependencies imported before it is told to
start, and the next one is started while the current one is examined: the kill lands in
the work, not in interpreter start-up. After each kill:

* every package directory is byte for byte the old reference or the new one;
* ``connector-builder check`` (the CLI command) exits 0 exactly when every package is in
  step with the specs it is given, else 1, and names exactly the packages that are not;
* the next ``generate`` (run to completion) brings every package in step and leaves no
  ``.<name>.new-*`` / ``.<name>.old-*`` debris beside them.

Iterations: 20 (``KILL_GENERATE_ITERATIONS`` overrides; at most 50 under ``CI=true``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main as cli
from builder.generate import generate
from builder.render import generator_digest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "specs"
UNCHANGED = "minimal_1"  # one package the change leaves alone


def _iterations() -> int:
    wanted = int(os.environ.get("KILL_GENERATE_ITERATIONS", "20"))
    if os.environ.get("CI") == "true":
        wanted = min(wanted, 50)
    return max(1, wanted)


# The console script's entry point, started only when a byte arrives on stdin: the
# generator's imports are done by then.
ZYGOTE = """
import sys
import black, click, jinja2, yaml
import builder.cli, builder.generate, builder.render
sys.stdin.buffer.read(1)
sys.exit(builder.cli.main(sys.argv[1:]))
"""


class Primed:
    """A ``connector-builder generate`` subprocess, imported and waiting for ``go()``."""

    def __init__(self, specs: Path, out: Path) -> None:
        self.specs = specs
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, "generate", str(specs), "--out", str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def go(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"g")
        self.proc.stdin.close()
        return time.perf_counter()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL, this process only
        self.proc.wait(timeout=30)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()


def _command(specs: Path, out: Path) -> list[str]:
    exe = shutil.which("connector-builder")
    head = [exe] if exe else [sys.executable, "-c", "from builder.cli import main; main()"]
    return [*head, "generate", str(specs), "--out", str(out)]


def _write_specs(target: Path, *, changed: bool) -> list[str]:
    """The spec set; ``changed`` alters every spec but UNCHANGED's. Returns the names."""
    target.mkdir(parents=True)
    minimal = (FIXTURES / "minimal.yaml").read_text("utf-8")
    texts = {"minimal": minimal, "rich": (FIXTURES / "rich.yaml").read_text("utf-8")}
    for i in (1,):
        texts[f"minimal_{i}"] = minimal.replace("name: minimal", f"name: minimal_{i}", 1)
    for name, text in texts.items():
        if changed and name != UNCHANGED:
            text = re.sub(
                r"^title: (.*)$", r"title: \1 (second edition)", text, count=1, flags=re.M
            )
            assert "(second edition)" in text, name
        (target / f"{name}.yaml").write_text(text, "utf-8")
    return sorted(texts)


def _tree(package: Path) -> dict[str, bytes]:
    return {
        p.relative_to(package).as_posix(): p.read_bytes()
        for p in sorted(package.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _state(
    out: Path, names: list[str], old: dict[str, dict[str, bytes]], new: dict[str, dict[str, bytes]]
) -> dict[str, str]:
    """For each package: "old", "new", "same" (old == new), or what is wrong with it."""
    states = {}
    for name in names:
        package = out / "connectors" / name
        if not package.is_dir():
            states[name] = "missing"
            continue
        tree = _tree(package)
        if tree == old[name] and tree == new[name]:
            states[name] = "same"
        elif tree == old[name]:
            states[name] = "old"
        elif tree == new[name]:
            states[name] = "new"
        else:
            differing = sorted(
                f
                for f in set(tree) | set(old[name]) | set(new[name])
                if tree.get(f) not in (old[name].get(f), new[name].get(f))
            )
            states[name] = f"MIXED ({', '.join(differing[:5])})"
    return states


def _debris(out: Path) -> list[str]:
    root = out / "connectors"
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".")) if root.is_dir() else []


def _check(specs: Path, out: Path) -> tuple[int, set[str], str]:
    """``connector-builder check`` through the CLI: exit code, packages named, output."""
    result = CliRunner().invoke(cli, ["check", str(specs), "--out", str(out)])
    named = {m.group(1) for m in re.finditer(r"^(\w+): ", result.stdout, flags=re.M)}
    return result.exit_code, named, result.output


def _swap_window(specs: Path, out: Path, names: list[str]) -> tuple[float, float, float]:
    """Run one generate to completion, watching the packages' inodes: seconds from the
    start signal to the first swap, to the last one, and to the end of the process."""
    inodes = {n: (out / "connectors" / n).stat().st_ino for n in names}
    primed = Primed(specs, out)
    time.sleep(1.0)  # let it import
    start = primed.go()
    proc = primed.proc
    swaps: list[float] = []
    seen: set[str] = set()
    while proc.poll() is None:
        for name, ino in inodes.items():
            if name not in seen:
                try:
                    now_ino = (out / "connectors" / name).stat().st_ino
                except FileNotFoundError:
                    continue
                if now_ino != ino:
                    seen.add(name)
                    swaps.append(time.perf_counter() - start)
        time.sleep(0.001)
    end = time.perf_counter() - start
    primed.kill()
    assert proc.returncode == 0
    if not swaps:
        return end * 0.5, end, end
    return swaps[0], swaps[-1], end


def _digest() -> str:
    """The generator's digest (part of every manifest), recomputed: other people editing
    builder/ while this test runs change it, and with it every package's manifest."""
    clear = getattr(generator_digest, "cache_clear", None)
    if clear is not None:
        clear()
    return generator_digest()


class References:
    """The old and new reference trees, rebuilt when the generator itself changes."""

    def __init__(self, tmp: Path, old_specs: Path, new_specs: Path, names: list[str]) -> None:
        self.tmp, self.old_specs, self.new_specs, self.names = tmp, old_specs, new_specs, names
        self.digest = ""
        self.rebuilds = 0
        self.refresh()

    def refresh(self) -> bool:
        """Rebuild if the generator changed; True when it did."""
        digest = _digest()
        if digest == self.digest:
            return False
        for kind, specs in (("old", self.old_specs), ("new", self.new_specs)):
            shutil.rmtree(self.tmp / f"ref-{kind}", ignore_errors=True)
            generate([specs], self.tmp / f"ref-{kind}")
        self.old = {n: _tree(self.tmp / "ref-old" / "connectors" / n) for n in self.names}
        self.new = {n: _tree(self.tmp / "ref-new" / "connectors" / n) for n in self.names}
        self.rebuilds += bool(self.digest)
        self.digest = digest
        return True

    def reset(self, out: Path, kind: str) -> None:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(self.tmp / f"ref-{kind}", out)


@pytest.mark.timeout(170)
def test_sigkilled_generate_leaves_every_package_old_or_new(tmp_path: Path) -> None:
    old_specs, new_specs = tmp_path / "specs-old", tmp_path / "specs-new"
    names = _write_specs(old_specs, changed=False)
    assert _write_specs(new_specs, changed=True) == names
    refs = References(tmp_path, old_specs, new_specs, names)
    changed = [n for n in names if refs.old[n] != refs.new[n]]
    assert changed == [n for n in names if n != UNCHANGED]

    out = tmp_path / "work"
    refs.reset(out, "old")
    _swap_window(new_specs, out, names)  # a first run warms caches up
    refs.reset(out, "old")
    first, last, end = _swap_window(new_specs, out, names)
    assert _state(out, names, refs.old, refs.new) == {
        n: "same" if n == UNCHANGED else "new" for n in names
    }
    current_is_new = True

    seed = int(os.environ.get("KILL_GENERATE_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    tally: Counter[str] = Counter()
    iterations = _iterations()
    done = 0
    primed = Primed(old_specs, out)
    try:
        while done < iterations:
            if refs.refresh():  # builder/ changed under us: start again from a known state
                refs.reset(out, "new" if current_is_new else "old")
            target_new = not current_is_new
            specs = new_specs if target_new else old_specs
            want = "new" if target_new else "old"
            assert primed.specs == specs
            if rng.random() < 0.75:  # mostly while packages are being swapped in
                delay = rng.uniform(max(0.0, first - 0.05), last + 0.02)
            else:
                delay = rng.uniform(0.0, end)
            started = primed.go()
            try:
                primed.proc.wait(timeout=max(0.0, delay - (time.perf_counter() - started)))
            except subprocess.TimeoutExpired:
                pass
            took = time.perf_counter() - started
            primed.kill()
            finished = primed.proc.returncode == 0
            if finished:  # runs got faster than measured: scale the window down
                scale = min(1.0, took / end)
                first, last, end = first * scale, last * scale, took
            # The next run imports while this one is examined.
            primed = Primed(old_specs if target_new else new_specs, out)
            where = f"iteration {done} (seed {seed}), killed after {delay:.3f}s towards {want}"

            states = _state(out, names, refs.old, refs.new)
            bad = {n: s for n, s in states.items() if s not in ("old", "new", "same")}
            if bad and _digest() != refs.digest:
                tally["redone: the generator changed meanwhile"] += 1
                primed.kill()
                primed = Primed(specs, out)
                continue
            assert not bad, f"{where}: packages neither old nor new: {bad}"
            stale = {n for n, s in states.items() if s not in (want, "same")}
            tally["finished before the kill" if finished else "killed"] += 1
            if not stale:
                tally["all in step"] += 1
            elif len(stale) == len(changed):
                tally["none in step"] += 1
            else:
                tally["part in step"] += 1
            if _debris(out):
                tally["debris after the kill"] += 1

            code, named, output = _check(specs, out)
            assert code == (0 if not stale else 1), (
                f"{where}: check exited {code} with {sorted(stale)} stale:\n{output}"
            )
            assert named == stale, f"{where}: check named {sorted(named)}, stale: {sorted(stale)}"

            generate([specs], out)  # the next generate, run to completion
            assert _debris(out) == [], f"{where}: debris after the next generate: {_debris(out)}"
            after = _state(out, names, refs.old, refs.new)
            assert all(s in (want, "same") for s in after.values()), f"{where}: then: {after}"
            current_is_new = target_new
            done += 1
    finally:
        primed.kill()

    # The CLI in a fresh process agrees at the end.
    final_specs = new_specs if current_is_new else old_specs
    head = _command(final_specs, out)[:-4]
    proc_check = subprocess.run(
        [*head, "check", str(final_specs), "--out", str(out)], capture_output=True, text=True
    )
    assert proc_check.returncode == 0, proc_check.stdout + proc_check.stderr
    print(
        f"\n{iterations} kills (seed {seed}; packages swapped in {first:.2f}-{last:.2f}s "
        f"of a {end:.2f}s run): {dict(tally)}"
    )


@pytest.mark.timeout(60)
def test_check_tells_the_truth_about_a_stale_and_a_hand_edited_package(tmp_path: Path) -> None:
    """The truth oracle used above can fail: a package left old, and one edited by hand."""
    old_specs, new_specs = tmp_path / "specs-old", tmp_path / "specs-new"
    _write_specs(old_specs, changed=False)
    _write_specs(new_specs, changed=True)
    out = tmp_path / "work"
    generate([old_specs], out)
    code, named, _ = _check(new_specs, out)
    assert code == 1 and named == {"minimal", "rich"}
    generate([new_specs], out)
    assert _check(new_specs, out)[:2] == (0, set())
    readme = out / "connectors" / "rich" / "README.md"
    readme.write_text(readme.read_text("utf-8") + "\nedited\n", "utf-8")
    code, named, output = _check(new_specs, out)
    assert code == 1 and named == {"rich"} and "edited by hand" in output
