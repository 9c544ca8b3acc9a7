"""The locked requirements: what `make lock` writes and what `make install` and the images install.

No network: these read the .in files, the lock files, the Dockerfiles and scripts/install.sh.
Whether a lock really installs is checked by installing it (see scripts/lock.sh), not here.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy import dockerfiles

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
LAYERS = ("web", "worker", "dev")
# Each lock is constrained by the one before it and holds everything in it.
BELOW = {"worker": "web", "dev": "worker"}
# Frameworks and the GPU libraries they pull: none may reach the web image.
ML_PREFIXES = (
    "torch",
    "tensorflow",
    "tf-",
    "keras",
    "jax",
    "detectron2",
    "pb1-detectron2",
    "opencv",
    "nvidia-",
    "triton",
    "cuda-",
)
INSTALLS = {
    "web": ROOT / "docker" / "web.Dockerfile",
    "worker": ROOT / "docker" / "worker.Dockerfile",
}
INSTALL_SH = ROOT / "scripts" / "install.sh"
# The top-level requirements.txt the design card asks for: the worker image's lock, nothing else.
TOP_LEVEL = ROOT / "requirements.txt"
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)"
    r"(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64})+)$"
)


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def _logical_lines(text: str) -> list[str]:
    """Lines with comments dropped and backslash continuations joined, as pip reads them."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):
            stripped = ""
        elif " #" in stripped:
            stripped = stripped.split(" #", 1)[0].rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            lines.append(line)
    assert not pending, "file ends inside a line continuation"
    return lines


def parse_lock(text: str) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    for line in _logical_lines(text):
        match = _PIN.match(line)
        assert match, f"not pinned with == and sha256 hashes: {line[:120]!r}"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{name} pinned twice"
        hashes = frozenset(re.findall(r"sha256:([0-9a-f]{64})", match["hashes"]))
        pins[name] = Pin(match["version"], hashes)
    return pins


def direct_requirements(path: Path) -> list[Requirement]:
    """The requirements an .in file names, with those of the .in files it includes (-r)."""
    found: list[Requirement] = []
    for line in _logical_lines(path.read_text()):
        if line.startswith(("-r ", "--requirement ")):
            found += direct_requirements(path.parent / line.split(maxsplit=1)[1])
        elif line.startswith(("-c ", "--constraint ")):
            continue
        else:
            assert not line.startswith("-"), f"{path.name}: unexpected option {line!r}"
            found.append(Requirement(line))
    return found


def installed_by(path: Path) -> dict[Path, dict[str, Pin]]:
    """The lock files a requirements file makes pip install (following ``-r``), and their pins.

    Fails on anything but includes of existing hash-pinned locks: a package named directly, a
    constraint, an index or other option, an include of a missing file.
    """
    found: dict[Path, dict[str, Pin]] = {}
    for line in _logical_lines(path.read_text()):
        option, _, target = line.partition(" ")
        assert option in {"-r", "--requirement"} and target.strip(), (
            f"{path.name}: only includes of lock files belong here, not {line!r}"
        )
        # pip reads an include relative to the file that names it.
        included = (path.parent / target.strip()).resolve()
        assert included.is_file(), f"{path.name} includes {target.strip()}, which does not exist"
        if included.name.endswith(".lock.txt"):
            found[included] = parse_lock(included.read_text())
        else:
            found.update(installed_by(included))
    return found


def _lock(name: str) -> dict[str, Pin]:
    return parse_lock((REQUIREMENTS / f"{name}.lock.txt").read_text())


def _pip_installs(script: str) -> list[list[str]]:
    """The arguments after `pip install` of every pip install a shell script runs."""
    commands = []
    for line in _logical_lines(script):
        words = shlex.split(line.replace("2> >(", " ").replace("$(", " "))
        for index in range(len(words) - 1):
            is_pip = words[index] == "pip" or words[index].endswith("/pip")
            if is_pip and words[index + 1] == "install":
                commands.append(words[index + 2 :])
    return commands


def _installs_lock_with_hashes(args: list[str], lock: str) -> bool:
    pairs = set(itertools.pairwise(args))
    return "--require-hashes" in args and ("-r", f"requirements/{lock}.lock.txt") in pairs


# --- the parsers above fail on what they must catch -----------------------------------------------

GOOD = "a==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via b\n"


@pytest.mark.parametrize(
    "text",
    [
        "a>=1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n",  # a range
        "a==1.0\n",  # no hash
        "a==1.0 \\\n    --hash=md5:" + "0" * 32 + "\n",  # not sha256
        "-e ./somewhere\n",  # an editable, unpinned
        "--index-url https://example.invalid/simple\n",  # an option naming a machine's index
        GOOD + GOOD,  # one package twice
    ],
)
def test_lock_parser_rejects_what_is_not_a_full_pin(text):
    with pytest.raises(AssertionError):
        parse_lock(text)


def test_lock_parser_reads_a_pin_with_hashes():
    text = GOOD + "Flask_Limiter==4.1.1 \\\n    --hash=sha256:" + "1" * 64 + " \\\n"
    text += "    --hash=sha256:" + "2" * 64 + "\n"
    pins = parse_lock(text)
    assert pins["a"] == Pin("1.0", frozenset({"0" * 64}))
    assert pins["flask-limiter"].hashes == {"1" * 64, "2" * 64}


def test_pip_install_reader_finds_hash_checked_installs():
    script = "python -m pip install --quiet --require-hashes \\\n  -r requirements/dev.lock.txt\n"
    script += "pip install --no-deps -e .\n"
    found = _pip_installs(script)
    assert found == [
        ["--quiet", "--require-hashes", "-r", "requirements/dev.lock.txt"],
        ["--no-deps", "-e", "."],
    ]
    assert _installs_lock_with_hashes(found[0], "dev")
    assert not _installs_lock_with_hashes(found[0], "web")
    assert not _installs_lock_with_hashes(["-r", "requirements/dev.lock.txt"], "dev")


@pytest.mark.parametrize(
    "text",
    [
        "-r requirements/worker.lock.txt\nnumpy==2.0.0\n",  # a package besides the lock
        "-r requirements/worker.lock.txt\n-c requirements/web.lock.txt\n",  # a constraint
        "--index-url https://example.invalid/simple\n-r requirements/worker.lock.txt\n",
        "-r requirements/gone.lock.txt\n",  # an include of a missing file
        "-r requirements/worker.in\n",  # the ranges, not the pins
    ],
)
def test_requirements_reader_rejects_what_is_not_an_include_of_a_lock(text, tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "worker.lock.txt").write_text(GOOD)
    (tmp_path / "requirements" / "worker.in").write_text("a==1.*\n")
    (tmp_path / "requirements.txt").write_text(text)
    with pytest.raises(AssertionError):
        installed_by(tmp_path / "requirements.txt")


def test_requirements_reader_follows_includes_relative_to_the_including_file(tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "worker.lock.txt").write_text(GOOD)
    (tmp_path / "requirements" / "all.txt").write_text("# one level down\n-r worker.lock.txt\n")
    (tmp_path / "requirements.txt").write_text("-r requirements/all.txt\n")
    found = installed_by(tmp_path / "requirements.txt")
    assert found == {(tmp_path / "requirements" / "worker.lock.txt").resolve(): parse_lock(GOOD)}


# --- the locks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_every_lock_line_is_pinned_with_hashes(layer):
    pins = _lock(layer)
    assert len(pins) > 10


@pytest.mark.parametrize("layer", LAYERS)
def test_lock_holds_every_direct_dependency_of_its_in_file_at_an_allowed_version(layer):
    pins = _lock(layer)
    for requirement in direct_requirements(REQUIREMENTS / f"{layer}.in"):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{layer}.in names {name}, {layer}.lock.txt lacks it: make lock"
        version = pins[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{layer}.lock.txt pins {name}=={version}, {layer}.in asks {requirement}: make lock"
        )


@pytest.mark.parametrize("layer", ["worker", "dev"])
def test_each_lock_holds_the_one_below_at_the_same_versions(layer):
    pins, below = _lock(layer), _lock(BELOW[layer])
    for name, pin in below.items():
        assert name in pins, f"{layer}.lock.txt lacks {name} ({BELOW[layer]}.lock.txt has it)"
        assert pins[name].version == pin.version, (
            f"{name}: {pins[name].version} in {layer}.lock.txt, {pin.version} in "
            f"{BELOW[layer]}.lock.txt"
        )


def test_web_lock_has_no_ml_framework_and_the_worker_lock_has_the_pinned_model_stack():
    web = _lock("web")
    ml = sorted(name for name in web if name.startswith(ML_PREFIXES))
    assert not ml, f"requirements/web.lock.txt pulls ML frameworks: {ml}"
    worker = _lock("worker")
    # What lies on this machine's disk and what install_detectron2.sh's build was checked with.
    assert worker["torch"].version == "2.14.1"
    assert worker["torchvision"].version == "0.29.1"
    assert {"keras", "tensorflow-cpu", "opencv-python-headless"} <= set(worker)
    # install_detectron2.sh builds without isolation and downloads the sdist with pip 25.
    assert worker["pip"].version == "25.0.1"
    assert int(worker["setuptools"].version.split(".")[0]) < 81
    assert "wheel" in worker


def test_top_level_requirements_txt_installs_exactly_the_worker_lock():
    assert TOP_LEVEL.is_file(), "requirements.txt (the design card's) is missing"
    found = installed_by(TOP_LEVEL)
    worker = (REQUIREMENTS / "worker.lock.txt").resolve()
    assert list(found) == [worker], f"requirements.txt installs {sorted(map(str, found))}"


# --- what installs them ---------------------------------------------------------------------------


@pytest.mark.parametrize("layer", sorted(INSTALLS))
def test_dockerfile_installs_its_lock_with_hash_checking_and_nothing_else(layer):
    stages = dockerfiles.parse_dockerfile(INSTALLS[layer].read_text())
    runs = [i.args for stage in stages for i in stage.all("RUN")]
    installs = [args for run in runs for args in _pip_installs(run)]
    assert installs, f"{INSTALLS[layer].name} installs nothing with pip"
    for args in installs:
        assert _installs_lock_with_hashes(args, layer), (
            f"{INSTALLS[layer].name}: pip install {args}"
        )
    copied = {s for stage in stages for c in dockerfiles.copies(stage) for s in c.sources}
    assert f"requirements/{layer}.lock.txt" in copied
    other_locks = {f"requirements/{other}.lock.txt" for other in LAYERS if other != layer}
    assert not copied & other_locks, f"{INSTALLS[layer].name} copies {copied & other_locks}"


def test_make_install_installs_the_dev_lock_with_hash_checking():
    installs = _pip_installs(INSTALL_SH.read_text())
    assert any(_installs_lock_with_hashes(args, "dev") for args in installs), installs
    for args in installs:
        if _installs_lock_with_hashes(args, "dev"):
            continue
        # Anything else is the project itself or another local tree, never an index download.
        targets = [a for a in args if not a.startswith("-")]
        assert "--no-deps" in args and all(t.startswith((".", "/")) for t in targets), args


def test_install_stamp_covers_every_lock_file():
    # A lock change must reinstall: the stamp is a hash of what `cat` reads here.
    script = INSTALL_SH.read_text()
    match = re.search(r"stamp_hash=\$\(cat ((?:[^|\\]|\\\n)+)", script)
    assert match, "install.sh computes no stamp from the files it reads"
    read: set[Path] = set()
    for pattern in match[1].replace("\\\n", " ").split():
        read |= set(ROOT.glob(pattern))
    locks = {REQUIREMENTS / f"{layer}.lock.txt" for layer in LAYERS}
    assert locks <= read, sorted(str(p.relative_to(ROOT)) for p in locks - read)
