#!/usr/bin/env python3
"""Bootstrap and run polybus with nothing installed but Python >= 3.11.

    python3 dev.py up          # the whole system (`polybus up`), servers embedded
    python3 dev.py test        # the test suite (what CI runs)
    python3 dev.py <command>   # any other `polybus` command, e.g. `status --json`

It installs the pinned uv into ./.tools (a private virtual environment) when no uv of that
version is found, then runs `uv run --locked …`: uv creates ./.venv from uv.lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

UV_VERSION = "0.13.9"
ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools"


def _version(uv: str) -> str:
    try:
        out = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.split()[1] if out.stdout.startswith("uv ") else ""


def find_uv() -> str:
    bin_dir = TOOLS / ("Scripts" if os.name == "nt" else "bin")
    for candidate in (str(bin_dir / "uv"), shutil.which("uv")):
        if candidate and _version(candidate) == UV_VERSION:
            return candidate
    print(f"dev.py: installing uv {UV_VERSION} into {TOOLS}", file=sys.stderr)
    if not (bin_dir / "python").exists():
        venv.create(TOOLS, with_pip=True, clear=True)
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}"],
        check=True,
    )
    return str(bin_dir / "uv")


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):
        sys.exit("polybus needs Python >= 3.11")
    if not argv:
        print(__doc__)
        return 2
    uv = find_uv()
    command = ["pytest", *argv[1:]] if argv[0] == "test" else ["polybus", *argv]
    os.chdir(ROOT)
    # exec, so Ctrl-C and SIGTERM reach uv (which forwards them to polybus) directly.
    os.execv(uv, [uv, "run", "--locked", *command])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
