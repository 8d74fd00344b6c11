"""Write pip constraints that pin every requirement to its declared lower bound: ``pkg>=X`` -> ``pkg==X``.

Reads the requirements files given (following ``-r`` includes) and prints one ``name==floor`` line per
requirement, so that ``pip install -r requirements-dev.txt -c <this output>`` installs the oldest
versions the project claims to support. A requirement without a ``>=`` floor is an error: every
dependency must state the oldest release it was tested with.

    python .ci/lowest_constraints.py requirements-dev.txt > constraints.txt
    python .ci/lowest_constraints.py --check requirements-dev.txt   # after the install: each at its floor?
"""
from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

# name, optional extras, then the specifier list; environment markers (";") are not used by the project.
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)$")
FLOOR = re.compile(r"^>=\s*(?P<version>[0-9][0-9A-Za-z.+!-]*)$")


class FloorError(ValueError):
    """A requirement line that does not state a lower bound this script can pin."""


def requirement_lines(path: Path, seen: set[Path] | None = None) -> list[tuple[Path, int, str]]:
    """Every requirement line of ``path`` and of the files it includes with ``-r``: (file, line number, text)."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if text.startswith(("-r ", "--requirement ")):
            lines += requirement_lines(path.parent / text.split(None, 1)[1].strip(), seen)
        elif text.startswith("-"):
            raise FloorError(f"{path.name}:{number}: option {text!r} is not supported here")
        else:
            lines.append((path, number, text))
    return lines


def floor_of(text: str) -> tuple[str, str]:
    """``'timm>=1.0.9'`` -> ``('timm', '1.0.9')``; an upper bound beside the floor is allowed and ignored."""
    match = REQUIREMENT.match(text)
    if not match:
        raise FloorError(f"cannot read requirement {text!r}")
    floors = [FLOOR.match(part.strip()) for part in match["spec"].split(",") if part.strip().startswith(">=")]
    if len(floors) != 1 or floors[0] is None:
        raise FloorError(f"requirement {text!r} states no single '>=' lower bound")
    return match["name"], floors[0]["version"]


def lowest_constraints(paths: list[Path]) -> list[str]:
    """``name==floor`` lines for every requirement in ``paths`` (includes followed), in file order."""
    pins: dict[str, str] = {}
    for path, number, text in (line for p in paths for line in requirement_lines(p)):
        try:
            name, version = floor_of(text)
        except FloorError as e:
            raise FloorError(f"{path.name}:{number}: {e}") from None
        key = re.sub(r"[-_.]+", "-", name).lower()
        if pins.get(key, version) != version:
            raise FloorError(f"{path.name}:{number}: {name} has two floors, {pins[key]} and {version}")
        pins[key] = version
    return [f"{name}=={version}" for name, version in pins.items()]


def off_floor(pins: list[str]) -> list[str]:
    """The pins that the running environment does not match: ``'timm: installed 1.0.31, floor 1.0.11'``."""
    wrong = []
    for pin in pins:
        name, version = pin.split("==")
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "nothing"
        # A local label (2.14.1+cpu) is the same release as its floor, as pip's own == comparison holds.
        if installed.split("+")[0] != version:
            wrong.append(f"{name}: installed {installed}, floor {version}")
    return wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", nargs="+", type=Path, help="requirements files (-r includes followed)")
    parser.add_argument("--check", action="store_true",
                        help="instead of printing, check that this environment holds every floor exactly")
    args = parser.parse_args(argv)
    try:
        pins = lowest_constraints(args.requirements)
    except (FloorError, OSError) as e:
        print(f"lowest_constraints: {e}", file=sys.stderr)
        return 1
    if not args.check:
        print("\n".join(pins))
        return 0
    wrong = off_floor(pins)
    for line in wrong:
        print(f"lowest_constraints: not at its floor: {line}", file=sys.stderr)
    print(f"lowest_constraints: {len(pins) - len(wrong)} of {len(pins)} requirements at their floor")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
