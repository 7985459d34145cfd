"""scripts/_steps.sh: installs in demo.sh and test.sh say what they are doing instead of minutes of silence."""

import subprocess
from pathlib import Path

STEPS = Path(__file__).resolve().parents[1] / "scripts" / "_steps.sh"

FAKE_PIP = """#!/usr/bin/env bash
echo "WARNING: Location 'file:///x' is ignored: it is neither a file nor a directory."
echo "Collecting numpy"
echo "  Downloading numpy-2.0.whl (18 MB)"
echo "Installing collected packages: numpy"
echo "Successfully installed numpy-2.0"
exit ${FAKE_STATUS:-0}
"""


def _run(tmp_path: Path, status: int) -> subprocess.CompletedProcess:
    (tmp_path / "python").write_text(FAKE_PIP)
    (tmp_path / "python").chmod(0o755)
    script = f'set -euo pipefail; . "{STEPS}"; step "installing things"; pip_install -e . || echo "pip said $?"; done_step'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE_STATUS": str(status)})


def test_installs_show_a_line_per_package_and_the_time(tmp_path):
    out = _run(tmp_path, 0)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == "[1] installing things"
    assert "    Collecting numpy" in lines and "    Successfully installed numpy-2.0" in lines
    assert not any("WARNING: Location" in line for line in lines)
    assert lines[-1].startswith("    done in ") and out.stdout == ""


def test_a_failed_install_keeps_pips_status(tmp_path):
    out = _run(tmp_path, 3)
    assert out.returncode == 0 and "pip said 3" in out.stdout
