"""benchmarks.emulated: the cost model's pieces, and a tiny run that writes well-formed reports.

No timing asserts: the figures depend on the machine and its load.

    sudo .venv/bin/python -m pytest tests/multihost/test_emulated_benchmarks.py -q
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import asdict

import pytest

from benchmarks import costmodel, emulated, report
from benchmarks.costmodel import Setting
from tests.conftest import ROOT, run_module

SCRIPT = ROOT / "tests" / "infra" / "emulate-cluster.sh"


def synthetic(alpha: float, beta_link: float, beta_host: float) -> dict:
    """Times a perfect roofline would give: link at 1 Gbit/s, unshaped host ceilings."""
    sizes = (1 << 20, 4 << 20, 16 << 20)
    out = {Setting(2, "1gbit"): {s: costmodel.ring_time(2, s, alpha, beta_link) for s in sizes}}
    for n in (2, 3):
        out[Setting(n, "0")] = {s: costmodel.ring_time(n, s, alpha, beta_host) for s in sizes}
    return out


def test_rate_bits():
    assert costmodel.rate_bits("100mbit") == 1e8
    assert costmodel.rate_bits("1gbit") == 1e9
    assert math.isinf(costmodel.rate_bits("0"))
    with pytest.raises(SystemExit):
        costmodel.rate_bits("1GB")


def test_model_is_a_roofline_over_link_and_host():
    cal = Setting(2, "1gbit")
    model = costmodel.calibrate(synthetic(1e-3, 8.5e-9, 2e-9), cal, cores=2)
    assert model.link_beta_s_per_byte == pytest.approx(8.5e-9, rel=1e-6)
    assert model.beta_link("100mbit") == pytest.approx(8.5e-8, rel=1e-6)
    assert model.beta_link("0") == 0.0
    size = 16 << 20
    # slow link: the link sets the pace; unshaped: the host; unmeasured N: nearest host fit
    assert model.allreduce_s(2, size, "100mbit") == pytest.approx(
        costmodel.ring_time(2, size, 1e-3, 8.5e-8), rel=1e-6)
    assert model.allreduce_s(3, size, "10gbit") == pytest.approx(
        costmodel.ring_time(3, size, 1e-3, 2e-9), rel=1e-6)
    assert model.host_fit(4) is model.host[3]
    # compute shared: 4 ranks on 2 cores take twice the 1-rank compute
    assert model.step_s(4, "0", 0.1, 0) == pytest.approx(
        0.2 + 6e-3 + model.allreduce_s(4, 16, "0"))
    checks = emulated.compare(synthetic(1e-3, 8.5e-9, 2e-9), model, cal)
    assert {c.role for c in checks} == {"link calibration", "host ceiling"}
    assert all(abs(c.error) < 1e-6 for c in checks)


def test_step_overhead_is_fitted_on_the_calibration_setting():
    cal = Setting(2, "1gbit")
    model = costmodel.calibrate(synthetic(1e-3, 8.5e-9, 2e-9), cal, cores=2)
    grads = 4 << 20
    bare = model.step_s(2, "1gbit", 0.1, grads)
    steps = {cal: bare + 0.15, Setting(2, "100mbit"): 1.0}
    compute = {cal: 0.1, Setting(2, "100mbit"): 0.3}  # median of two: 0.2
    c1, checks = emulated.fit_steps(steps, compute, grads, model, cal)
    assert c1 == pytest.approx(0.2)
    assert model.step_overhead_s == pytest.approx(0.05)  # c₁ is 0.1 s more than in `bare`
    assert model.step_s(2, "1gbit", c1, grads) == pytest.approx(steps[cal])
    by = {(c.hosts, c.rate): c for c in checks}
    assert by[(2, "1gbit")].role == "link calibration" and abs(by[(2, "1gbit")].error) < 1e-9
    assert by[(2, "100mbit")].compute_paired_s == 0.3


def test_plan_groups_by_host_count_and_adds_the_calibration():
    args = emulated.parse_args(["--hosts", "3", "--rates", "100mbit"])
    got = emulated.plan(args, Setting(2, args.calibrate))
    assert got == [Setting(2, "0"), Setting(2, "1gbit"), Setting(3, "0"), Setting(3, "100mbit")]
    args.rounds = 2  # host-bound settings and the calibration repeat; wire-bound ones do not
    assert [st for rnd, st in emulated.passes(args, Setting(2, args.calibrate)) if rnd] == [
        Setting(2, "0"), Setting(2, "1gbit"), Setting(3, "0")]
    assert emulated.iters_for(Setting(4, "100mbit"), 16 << 20, 10) == 3
    assert emulated.iters_for(Setting(2, "0"), 16 << 20, 10) == 10


def test_committed_report_comes_again_from_its_measurements(tmp_path, monkeypatch):
    """docs/scaling/emulated: refitting the committed measurements with today's cost model
    gives the committed model, predictions and report.md (no root: nothing is measured)."""
    committed = json.loads((ROOT / "docs/scaling/emulated/report.json").read_text())
    got, gbytes = emulated.load_measured(ROOT / "docs/scaling/emulated/report.json")
    cal = Setting(2, committed["calibration"])
    model = costmodel.calibrate(got.allreduce, cal, committed["model"]["cores"])
    checks = emulated.compare(got.allreduce, model, cal)
    got.compute_s, steps = emulated.fit_steps(got.steps, got.compute, gbytes, model, cal)
    assert model.as_json() == committed["model"]
    assert [asdict(c) for c in checks] == committed["allreduce"]
    assert [asdict(s) for s in steps] == committed["scaling"]["runs"]
    monkeypatch.setattr(report, "machine_info", lambda: committed["machine"])
    emulated.write_report(tmp_path, got, model, checks, steps, gbytes,
                          emulated.parse_args(["--out", str(tmp_path)]))
    assert (tmp_path / "report.md").read_text() == \
        (ROOT / "docs/scaling/emulated/report.md").read_text()


@pytest.mark.netns
@pytest.mark.horovod
def test_tiny_run_writes_reports_and_takes_the_cluster_down(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("emulated hosts need root (network namespaces)")
    if not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("iproute2 (ip, tc) is not installed")
    if os.path.exists("/run/netns/node01"):
        pytest.skip("an emulated cluster is up (someone else's run); benchmarks.emulated refuses")
    out = tmp_path / "report"
    proc = run_module("benchmarks.emulated", "--out", out, "--hosts", "2", "--rates", "1gbit",
                      "--sizes", "256K,2M", "--iters", "3", "--rounds", "1", "--steps", "5",
                      "--micro-batch", "2", "--nice", "0", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert {(c["hosts"], c["rate"]) for c in report["allreduce"]} == {(2, "0"), (2, "1gbit")}
    for c in report["allreduce"]:
        assert c["measured_s"] > 0 and c["predicted_s"] > 0
        assert c["bytes"] in (256 << 10, 2 << 20) and c["bound"] in ("link", "host")
    assert report["model"]["link"]["beta_s_per_byte"] > 0 and "2" in report["model"]["host"]
    runs = report["scaling"]["runs"]
    assert [(r["hosts"], r["rate"]) for r in runs] == [(2, "1gbit")]
    assert 0 < runs[0]["efficiency"] and 0 < runs[0]["predicted_efficiency"] <= 1
    assert {v["role"] for v in report["verdict"]} == {"host ceiling", "link calibration"}
    assert isinstance(report["all_within_20pct"], bool) and "netem" in report["delay"]
    md = (out / "report.md").read_text()
    assert "## Verdict per setting" in md and "1gbit x 2" in md
    for png in ("allreduce_error.png", "efficiency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    again = run_module("benchmarks.emulated", "--out", out, "--reanalyse", timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((out / "report.json").read_text())["allreduce"] == report["allreduce"]
    status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True,
                            timeout=30)
    assert "down" in status.stdout
