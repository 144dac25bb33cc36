"""Where the output goes wrong: a full disk names the file and the cause (exit 1); a reader that
closes the pipe (`| head`) ends the command quietly with 141."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .workspace import AS_OF, Result, Workspace, one_error

# --- export: a full disk says so, a closed pipe ends quietly ---------------------------------

@pytest.fixture(scope="module")
def exported(filled: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return filled.clone(tmp_path_factory.mktemp("export"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_export_to_a_full_disk_names_the_file_and_the_cause(exported: Workspace) -> None:
    one_error(exported("export", "AAPL", "-o", "/dev/full"), 1,
               "cannot write /dev/full: No space left on device")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([exported.exe, "export", "AAPL"], cwd=exported.root, env=exported.env,
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    one_error(Result(("export", "AAPL", ">", "/dev/full"), proc.returncode, "", proc.stderr), 1,
               "cannot write stdout: No space left on device")


def test_a_closed_pipe_under_a_long_export_ends_quietly_with_141(exported: Workspace) -> None:
    """`enrichctl export AAPL -t 1h | head -1`: the reader has what it wanted. The exit status is
    the one of a process killed by SIGPIPE (128 + 13), as for `cat`; nothing is printed."""
    big = exported.clone(exported.root.parent / "big")
    run = big("run", "--provider", "demo", "--symbols", "AAPL", "-t", "1h", "--since", "2023-01-01",
              "--as-of", AS_OF, timeout=300)
    assert run.code == 0, run
    proc = subprocess.Popen([big.exe, "export", "AAPL", "-t", "1h"], cwd=big.root, env=big.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"ts,time,open")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert (proc.wait(timeout=60), err) == (141, "")


