"""The warning a DM21 run starts with when the compiled kernels are not in use (issue 24).

Apart from tests/test_kernels.py, whose NumPy route (DM21_NO_KERNELS=1) test_setup runs in
a session without weights: this test runs DM21.
"""

from __future__ import annotations

import pytest

from dm21cli.functional import kernels


@pytest.mark.parametrize("functional", ["DM21", "B3LYP"])
def test_a_dm21_run_without_its_kernels_says_so_first_in_its_log(tmp_path, monkeypatch,
                                                                 checkpoints_dir, functional):
    """Missing kernels (an editable checkout whose build products were cleaned) cost DM21
    2.5x; the log's first lines say so with the command that rebuilds them, and the run's
    numbers are right (the libcint path).  A B3LYP run, which never uses them, is silent."""
    from dm21cli.io.inputs.load import load_job
    from dm21cli.io.outputs.qcschema import fields
    from dm21cli.jobs.run import run_job

    monkeypatch.delenv("DM21_NO_KERNELS", raising=False)
    monkeypatch.setattr(kernels, "_library_file", lambda: None)
    monkeypatch.setattr(kernels, "_LIB", False)
    monkeypatch.setattr(kernels, "_STATUS", None)
    job = tmp_path / "h2.yaml"
    job.write_text("molecule:\n  xyz: |\n    H 0 0 0\n    H 0 0 0.74\nbasis: sto-3g\n"
                   f"functional: {functional}\nscf: {{grid_level: 0}}\n"
                   f"job: {{output_dir: {tmp_path / 'out'}}}\nresources: {{threads: 1}}\n")
    lines = []
    result = fields(run_job(load_job(job), checkpoints=checkpoints_dir, reporter=lines.append))
    assert result["success"]
    head = (tmp_path / "out" / "dm21.log").read_text().splitlines()[:3]
    warned = [line for line in head if "WARNING compiled kernels not in use, not built" in line]
    if functional == "DM21":
        assert warned and f"Rebuild them with: {kernels.rebuild_command()}" in warned[0]
        assert any("WARNING compiled kernels" in line for line in lines)  # the terminal too
        assert result["provenance"]["compiled_kernels"] is False
    else:
        assert not warned
