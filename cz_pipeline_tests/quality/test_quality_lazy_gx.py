"""Great Expectations takes seconds to import: loading the definitions (webserver, daemon, every
run worker) must not pay for it. GX is imported only when a check actually runs."""

from __future__ import annotations

import subprocess
import sys


def test_great_expectations_is_not_imported_when_the_definitions_load():
    code = ("import sys, time; t = time.time(); import cz_pipeline.definitions as d; "
            "assert d.defs.resolve_job_def('routine_sync'); "
            "print('great_expectations' in sys.modules, "
            "any(m.startswith('great_expectations') for m in sys.modules), round(time.time() - t, 2))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    gx_loaded, any_gx_module, _seconds = out.stdout.split()
    assert gx_loaded == "False" and any_gx_module == "False", out.stdout
