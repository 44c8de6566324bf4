"""The README's commands, run as written, from a fresh clone (issue 16).

Every ```bash block of README.md runs, in order, in a `git clone` of this repository: `make run`
in the background (as the README's first terminal), then each other block in a shell of its own
with `set -e -o pipefail`, from the clone's root, as a user would paste it. The blocks that are
not run are named in NOT_RUN with the reason.

What is reused, and why (to keep this test under a minute or so): the clone's `.venv` is created
before `make run`, and sees the dependencies already installed in the virtualenv running this test
(through a `.pth` entry; nothing is copied or downloaded). `make run` then does the rest as on a
fresh machine: it installs Scout itself into that `.venv` (so `.venv/bin/scout` is made by the
Makefile), and starts both servers. Its set-up output is checked for warnings. The set-up half of
`make run` (its prerequisite, `make setup`) runs first outside the namespace, because pip fetches
the build backend (setuptools) from the package index; `make run` then finds it done.

No real model key is used: the whole run happens in a network namespace of its own (so ports 8000
and 7860, which the README names, are free whatever else this machine runs) with the scripted
model server on its loopback and ANTHROPIC_BASE_URL pointing at it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

NOT_RUN = {
    "make test": "runs the whole test suite, this test included",
}

# Lines this machine's own pip configuration makes pip print (an extra index that does not
# exist here); they come from the machine, not from Scout's set-up.
MACHINE_PIP_NOISE = re.compile(r"^WARNING: Location '[^']*' is ignored: it is neither a file nor a directory\.$")


def bash_blocks(markdown: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```bash\n(.*?)^```", markdown, re.S | re.M)]


def namespace_prefix() -> list[str]:
    """A private network namespace (root, or unprivileged user namespaces), or nothing."""
    for prefix in (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]):
        if shutil.which(prefix[0]) and subprocess.run(prefix + ["true"], capture_output=True).returncode == 0:
            return prefix
    return []


def prepare_venv(clone: Path, tmp: Path) -> None:
    """The clone's .venv, seeing this test's installed dependencies (but not its Scout)."""
    subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True, timeout=120)
    deps = tmp / "deps"
    deps.mkdir()
    shared = Path(sysconfig.get_paths()["purelib"])
    for entry in shared.iterdir():
        name = entry.name.lower()
        if name.startswith(("scout", "__editable__", "pip", "setuptools", "pkg_resources", "_distutils_hack",
                            "distutils-precedence")) \
                or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    site = next((clone / ".venv" / "lib").glob("python3*/site-packages"))
    (site / "_shared_deps.pth").write_text(f"{deps}\n")


DRIVER = r"""
set -u
[ -n "${IN_NS:-}" ] && ip link set lo up
cd "$WORK"
"$TEST_PY" "$CLONE/tests/model_server.py" > model.out 2>&1 &
for _ in $(seq 300); do grep -q READY model.out && break; sleep 0.1; done
export ANTHROPIC_BASE_URL=$(sed -n 's/^READY //p' model.out)
export ANTHROPIC_API_KEY=test-key CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 HOME="$WORK/home"
cd "$CLONE"
setsid make run > "$WORK/make-run.out" 2>&1 &
RUN=$!
trap 'kill -INT -- -$RUN 2>/dev/null; wait $RUN; kill %1 2>/dev/null' EXIT
for _ in $(seq 1800); do
  grep -q "Press Ctrl-C" "$WORK/make-run.out" && break
  kill -0 $RUN 2>/dev/null || { echo "make run exited"; exit 1; }
  sleep 0.1
done
grep -q "Press Ctrl-C" "$WORK/make-run.out" || { echo "make run did not come up"; exit 1; }
for block in "$WORK"/block-*.sh; do
  bash -e -o pipefail "$block" > "${block%.sh}.out" 2>&1 < /dev/null
  echo "$(basename "$block") exit $?"
done
curl -s http://127.0.0.1:8000/sessions > "$WORK/sessions.json"
curl -s http://127.0.0.1:8000/tasks > "$WORK/tasks.json"
"""


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> dict:
    prefix = namespace_prefix()
    if not prefix:
        # Not a skip: this test is the README's only check, and a pass must mean it ran.
        pytest.fail("cannot run the README here: it needs a network namespace of its own (`unshare --net` as "
                    "root, or unprivileged user namespaces), since the README's ports are fixed")
    work = tmp_path_factory.mktemp("readme")
    (work / "home").mkdir()
    clone = work / "scout"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    # Test the working tree as it is (committed or not): what the README describes is what is here.
    for rel in subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.split():
        if (ROOT / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, clone / rel)
    prepare_venv(clone, work)
    setup = subprocess.run(["make", "setup"], cwd=clone, capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    (work / "make-setup.out").write_text(setup.stdout + setup.stderr)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    blocks = bash_blocks((clone / "README.md").read_text())
    first, rest = blocks[0], blocks[1:]
    assert first.strip().startswith("make run"), "the README should begin with `make run`"
    ran = []
    for block in rest:
        if any(block.strip().startswith(cmd) for cmd in NOT_RUN):
            continue
        ran.append(block)
        (work / f"block-{len(ran):02d}.sh").write_text(block)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SCOUT_", "ANTHROPIC_", "CLAUDE", "PYTHONPATH", "VIRTUAL_ENV"))}
    env.update(WORK=str(work), CLONE=str(clone), TEST_PY=sys.executable, IN_NS="1")
    out = subprocess.run(prefix + ["bash", "-c", DRIVER], env=env, capture_output=True, text=True,
                         timeout=600)
    results = {}
    for i, block in enumerate(ran, 1):
        output = (work / f"block-{i:02d}.out").read_text() if (work / f"block-{i:02d}.out").exists() else ""
        results[i] = (block, output)
    return {"driver": out.stdout + out.stderr, "blocks": results, "work": work, "clone": clone,
            "setup": (work / "make-setup.out").read_text() + (work / "make-run.out").read_text()}


def test_every_bash_block_runs_as_written(readme_run):
    driver = readme_run["driver"]
    for i, (block, output) in readme_run["blocks"].items():
        assert f"block-{i:02d}.sh exit 0" in driver, f"README block failed:\n{block}\n--- output:\n{output}\n{driver}"
    commands = "\n".join(block for block, _ in readme_run["blocks"].values())
    assert "curl" in commands and ".venv/bin/scout ask" in commands  # the blocks we mean to run did run


def test_make_run_is_quiet_and_says_where_everything_is(readme_run):
    setup = readme_run["setup"]
    assert "Scout API: http://127.0.0.1:8000" in setup and "Scout UI:  http://127.0.0.1:7860" in setup
    assert "Scout CLI: .venv/bin/scout --help" in setup
    assert (readme_run["clone"] / ".venv" / "bin" / "scout").exists()
    noise = [line for line in setup.splitlines()
             if re.search(r"warning|!!|deprecat|notice", line, re.I) and not MACHINE_PIP_NOISE.match(line)]
    assert noise == [], setup


def test_the_examples_do_what_the_readme_says(readme_run):
    outputs = [output for _, output in readme_run["blocks"].values()]
    curl_out = next(o for block, o in readme_run["blocks"].values() if "TASK_ID=$(curl" in block)
    assert re.search(r'"status":\s*"completed"', curl_out) and "event: end" in curl_out, curl_out
    assert re.search(r'"deleted":\s*true', curl_out), curl_out
    ask_out = next(o for block, o in readme_run["blocks"].values() if "scout ask" in block)
    assert "ECHO: What does this repo do?" in ask_out, ask_out
    assert any("approve" in o and "sessions" in o for o in outputs)  # --help listed the commands
    # The curl example deleted its task; no empty conversation is left behind for it.
    sessions = json.loads((readme_run["work"] / "sessions.json").read_text())["sessions"]
    assert sessions and all(s["task_count"] > 0 for s in sessions), sessions
    tasks = json.loads((readme_run["work"] / "tasks.json").read_text())["tasks"]
    assert [t["message"] for t in tasks] == ["What does this repo do?"], tasks
