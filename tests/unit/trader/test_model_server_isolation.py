"""The trader makes itself non-dumpable before it starts a model server (trader/model.py make_undumpable), so a
process of the same user, as the model server running a registered model's own code is, cannot read the
trader's /proc/<pid>/environ (its credentials).

1. make_undumpable clears the process's dumpable flag (prctl PR_GET_DUMPABLE reads 0 after it, 1 before);
2. what the flag does, shown with the kernel itself: an unprivileged "trader" (user nobody, Debian's python3:
   root reads any /proc file anyway) whose same-user child reads its environ, then the same with the flag
   cleared by the same prctl call: denied;
3. the model server is started only after the flag was cleared (test_trader_model_contract.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

NOBODY = 65534
PR_GET_DUMPABLE = 3


def test_make_undumpable_clears_the_flag():
    code = ("import ctypes\nfrom quantramp.trader.model import make_undumpable\nprctl = ctypes.CDLL(None).prctl\n"
            f"before = prctl({PR_GET_DUMPABLE}, 0, 0, 0, 0)\nassert make_undumpable()\n"
            f"print(before, prctl({PR_GET_DUMPABLE}, 0, 0, 0, 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"]


#: the "trader": clears its dumpable flag (or not) as make_undumpable does, then starts a same-user child that
#: tries to read its environ
TRADER = """
import ctypes, subprocess, sys
if sys.argv[1] == "protect":
    assert ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) == 0
probe = "import os\\ntry:\\n    data = open(f'/proc/{os.getppid()}/environ', 'rb').read()\\n" \\
        "    print('READ' if b'hunter2' in data else 'NOSECRET')\\nexcept PermissionError:\\n    print('DENIED')"
print(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip())
"""


def _trader(python: str, mode: str) -> str:
    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    out = subprocess.run([python, "-c", TRADER, mode], env={"QR_REDIS_PASSWORD": "hunter2", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60, cwd="/tmp",
                         preexec_fn=drop if os.geteuid() == 0 else None)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_same_user_process_cannot_read_a_non_dumpable_processs_environ():
    python = shutil.which("python3", path="/usr/bin:/bin") if os.geteuid() == 0 else sys.executable
    if python is None:
        pytest.skip("no system python3 for an unprivileged user")
    assert _trader(python, "open") == "READ"  # without the flag cleared, the child reads the password
    assert _trader(python, "protect") == "DENIED"
