"""`make lock` takes its package index and the CPU torch wheel's location from pip's configuration, never from a
host written in the Makefile. Run with a stand-in `uv` that prints its arguments (nothing is resolved or
downloaded) and a stand-in `python` that skips `pip install` and runs everything else for real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lock_recipe() -> str:
    text = (ROOT / "Makefile").read_text()
    return re.search(r"^lock:.*?(?=^\S|\Z)", text, re.MULTILINE | re.DOTALL).group(0)


def test_the_lock_recipe_names_no_host():
    assert not re.search(r"https?://", lock_recipe()), lock_recipe()


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    if not shutil.which("make"):
        pytest.fail("make is not installed (apt-get install make)", pytrace=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2 $3" = "-m pip install" ]; then exit 0; fi\n'
        f'exec {sys.executable} "$@"\n')
    (bin_dir / "uv").write_text('#!/bin/sh\necho "UV $*"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def uv_args(fake_bin: Path, tmp_path: Path, config: str | None = None, **env: str) -> str:
    """The `uv` command `make lock` runs, with pip configured by `config` alone (no config: os.devnull, which
    makes pip read no configuration file at all) and the environment's PIP_*/UV_* variables replaced by `env`."""
    conf = os.devnull
    if config is not None:
        conf = str(tmp_path / "pip.conf")
        Path(conf).write_text(config)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "MAKE"))}
    environ.update(PIP_CONFIG_FILE=conf, **env)
    out = subprocess.run(["make", "--no-print-directory", "lock", f"BIN={fake_bin}"], cwd=ROOT, env=environ,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return next(line for line in out.stdout.splitlines() if line.startswith("UV "))


def test_lock_uses_the_index_pip_is_configured_with(fake_bin, tmp_path):
    from_env = uv_args(fake_bin, tmp_path, PIP_INDEX_URL="https://mirror.example/simple")
    assert "--index-url https://mirror.example/simple" in from_env
    from_config = uv_args(fake_bin, tmp_path, "[global]\nindex-url = https://cfg.example/simple\n")
    assert "--index-url https://cfg.example/simple" in from_config
    default = uv_args(fake_bin, tmp_path)
    assert "--index-url" not in default  # uv's own default index
    assert "--no-emit-package torch" in default and "-o requirements.lock" in default


def test_lock_takes_the_torch_wheel_from_pip_find_links_or_uvs_cpu_backend(fake_bin, tmp_path):
    assert "--find-links /srv/wheels" in uv_args(fake_bin, tmp_path, PIP_FIND_LINKS="/srv/wheels")
    assert "--find-links /srv/w2" in uv_args(fake_bin, tmp_path, "[global]\nfind-links = /srv/w2\n")
    given = uv_args(fake_bin, tmp_path, PIP_FIND_LINKS="/srv/wheels", LOCK_TORCH_SOURCE="--find-links /own")
    assert "--find-links /own" in given and "/srv/wheels" not in given
    assert "--torch-backend cpu" in uv_args(fake_bin, tmp_path)
