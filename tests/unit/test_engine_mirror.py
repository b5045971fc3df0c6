"""scripts/docker-up.sh takes debootstrap's Debian mirror from the machine's apt sources or
TRAINPOD_ENGINE_MIRROR, never from a host written in the repository (issue #12).

The script is run for real (``--print-mirror`` stops after choosing the mirror, needs no root and changes
nothing) against apt configuration trees written here, in both of apt's formats.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "docker-up.sh"


def mirror(apt_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRAINPOD_ENGINE_")}
    full.update(TRAINPOD_ENGINE_APT_DIR=str(apt_dir), **env)
    return subprocess.run(["bash", str(SCRIPT), "--print-mirror"], capture_output=True, text=True, env=full,
                          timeout=30)


def test_one_line_sources_pick_the_bookworm_deb_line(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb http://security.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.corp.invalid/debian bookworm main\n"
    )
    out = mirror(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "http://mirror.corp.invalid/debian"


def test_deb822_sources_skip_disabled_and_other_suites(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "cloud-sdk.list").write_text("deb https://vendor.invalid/apt cloud-sdk-bookworm main\n")
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\n# http://snapshot.invalid/archive/debian/20250520T000000Z\n"
        "URIs: http://deb822.corp.invalid/debian http://second.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    (d / "old.list.disabled").write_text("deb http://disabled.invalid/debian bookworm main\n")
    out = mirror(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "http://deb822.corp.invalid/debian"


def test_the_setting_wins_and_without_either_it_fails_naming_the_setting(tmp_path):
    (tmp_path / "sources.list").write_text("deb http://mirror.corp.invalid/debian bookworm main\n")
    out = mirror(tmp_path, TRAINPOD_ENGINE_MIRROR="http://set.invalid/debian")
    assert out.stdout.strip() == "http://set.invalid/debian"
    (tmp_path / "sources.list").write_text("deb http://mirror.corp.invalid/ubuntu noble main\n")
    out = mirror(tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert "TRAINPOD_ENGINE_MIRROR" in out.stderr and "bookworm" in out.stderr


def test_no_public_package_host_is_written_in_the_scripts_or_ci():
    hosts = ("deb.debian.org", "download.pytorch.org", "pypi.org", "files.pythonhosted.org")
    for path in [*sorted((ROOT / "scripts").glob("*")), ROOT / ".ci" / "run", ROOT / ".github/workflows/ci.yml"]:
        text = path.read_text(encoding="utf-8")
        assert not [h for h in hosts if h in text], path
