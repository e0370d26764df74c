"""`icu-unlearn run --help` lists every config key with its default and the reason for it,
and a setting that does nothing under the others is refused with the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from icu_unlearn.config import config_help, load_config, valid_keys
from icu_unlearn.errors import UsageError


def test_every_config_key_has_a_reason():
    rows = config_help()
    assert [key for key, _, _ in rows] == valid_keys()
    assert all(reason.strip() for _, _, reason in rows), [k for k, _, r in rows if not r]
    assert dict((k, d) for k, d, _ in rows)["stop.scope"] == "each"


def test_run_help_lists_every_key_without_loading_torch():
    code = (
        "import sys, contextlib, io\n"
        "from icu_unlearn.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['run', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(out.getvalue())\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for key in valid_keys():
        assert f"  {key} = " in proc.stdout, key
    assert "torch loaded: False" in proc.stdout


def test_readmit_under_each_is_refused_with_the_fix():
    config = load_config(None, ["model=m", "forget=f", "refinement.readmit=true"])
    with pytest.raises(UsageError, match="stop.scope: mean"):
        config.require()
    load_config(
        None, ["model=m", "forget=f", "refinement.readmit=true", "stop.scope=mean"]
    ).require()
