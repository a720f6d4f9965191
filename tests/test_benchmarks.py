"""The benchmarks run at tiny sizes and write well-formed reports; no timing asserts.

    .venv/bin/python -m pytest tests/test_benchmarks.py -q
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import costmodel, harness, ranks, report, scaling, timeline
from tests.conftest import ROOT, run_module

AR_KEYS = {"backend", "np", "bytes", "time_s", "algbw_gbps", "busbw_gbps", "config"}
RUN_KEYS = {"backend", "np", "mode", "tokens_per_s", "step_time_s", "efficiency"}


def test_fit_recovers_alpha_beta():
    alpha, beta = 50e-6, 1e-9
    pts = [(n, s, costmodel.ring_time(n, s, alpha, beta)) for n in (2, 4) for s in (1e4, 1e6, 1e8)]
    fit = costmodel.fit(pts)
    assert fit.alpha_s == pytest.approx(alpha, rel=1e-6)
    assert fit.beta_s_per_byte == pytest.approx(beta, rel=1e-6)
    compute = costmodel.Compute(0.1)
    assert costmodel.efficiency(1, compute, 1e6, costmodel.Ring(alpha, beta),
                                small_per_step=0) == 1.0
    nets = costmodel.predictions(compute, 4e6, fit, overlap=0.0)
    assert all(0 < e <= 1 for net in nets.values() for e in net["efficiency"].values())


def test_straggler_factor_is_the_expected_slowest_of_n():
    assert costmodel.expected_max([1.0, 1.0, 1.0], 64) == pytest.approx(1.0)
    # two equally likely step times: the slower of two draws is 1.5 three times in four
    assert costmodel.expected_max([0.5, 1.5], 2) == pytest.approx(0.25 * 0.5 + 0.75 * 1.5)
    assert costmodel.expected_max([0.5, 1.5], 512) == pytest.approx(1.5)
    assert costmodel.expected_max([0.5, 1.5], 1) == 1.0
    # sharing and stragglers slow compute; the 1-rank step stays the reference
    compute = costmodel.Compute(0.1, shared_throughput=0.8, relative_steps=[0.5, 1.5])
    assert compute.at(1) == 0.1
    assert compute.at(2) == pytest.approx(0.1 * 1.25 / 0.8)
    assert costmodel.efficiency(2, compute, 0, costmodel.Ring(0, 0),
                                small_per_step=0) == pytest.approx(0.64)


def test_fusion_copies_count_once_ranks_communicate_and_overlap_round_trips():
    compute = costmodel.Compute(0.1, copy_s_per_byte=1e-9)  # 10 ms for 10 MB of gradients
    ring = costmodel.Ring(1e-4, 1e-9)
    assert costmodel.efficiency(1, compute, 1e7, ring) == 1.0
    efficiency = costmodel.efficiency(2, compute, 1e7, costmodel.Ring(0, 0), small_per_step=0)
    assert efficiency == pytest.approx(0.1 / 0.11)
    # the overlap that reproduces the model's own step time is the one it was given
    step = costmodel.step_time(4, compute, 1e7, ring, overlap=0.25)
    assert costmodel.measured_overlap(compute, step, 4, 1e7, ring) == pytest.approx(0.25)


def test_a_network_row_takes_the_networks_own_inputs():
    """Left out, a network's software latency and step-time variation are this machine's;
    given, they replace them (issue 28: rows from the network's own inputs)."""
    here, compute = costmodel.Ring(100e-6, 1e-9), costmodel.Compute(0.1, relative_steps=[0.5, 1.5])
    mine = costmodel.Network("here's stack", 2e-6, 1e10)
    own = costmodel.Network("its own", 2e-6, 1e10, software_latency_s=1e-6, relative_steps=(1.0,))
    nets = costmodel.predictions(compute, 4e6, here, 0.0, networks=[mine, own])
    assert list(nets) == ["this machine (fitted)", "here's stack", "its own"]
    assert nets["here's stack"]["alpha_s"] == pytest.approx(102e-6)
    assert nets["its own"]["alpha_s"] == pytest.approx(3e-6)
    assert nets["its own"]["beta_s_per_byte"] == nets["here's stack"]["beta_s_per_byte"] == 1e-10
    steady = costmodel.efficiency(512, costmodel.Compute(0.1), 4e6, costmodel.Ring(3e-6, 1e-10))
    assert nets["its own"]["efficiency"]["512"] == pytest.approx(steady)
    assert nets["here's stack"]["efficiency"]["512"] < steady  # this machine's stragglers


def test_committed_scaling_report_comes_again_from_its_runs(tmp_path, monkeypatch):
    """docs/scaling: the cost model, refitted to the committed runs, timeline and allreduce
    report with today's code, gives the committed model and the committed report.md."""
    committed = json.loads((ROOT / "docs" / "scaling" / "report.json").read_text())
    s = committed["settings"]
    args = scaling.parse_args(["--allreduce", str(ROOT / "docs" / "scaling" / "allreduce"),
                               "--steps", str(s["steps"]), "--repeats", str(s["repeats"]),
                               "--micro-batch", str(s["micro_batch"]),
                               "--global-batch", str(s["global_batch"])])
    runs = [scaling.Run(**r) for r in committed["runs"]]
    model = scaling.cost_model(runs, args, committed["model"]["grad_bytes"],
                               committed["timeline"], harness.Launch())
    assert json.loads(json.dumps(model)) == committed["model"]
    monkeypatch.setattr(report, "machine_info", lambda: committed["machine"])
    scaling.write_report(tmp_path, runs, model, args, committed["timeline"])
    assert (tmp_path / "report.md").read_text() == \
        (ROOT / "docs" / "scaling" / "report.md").read_text()


def test_report_writes_json_markdown_and_each_benchmarks_figures(tmp_path):
    machine = {"host": "h", "cores": 2, "load_avg_start": [0.5], "load_avg": [1.0], "torch": "t",
               "commit": "c"}
    drawn = []
    report.write(tmp_path, {"x": 1, "machine": machine}, "Title", [("Part", " body \n")],
                 [report.Figure("a.png", "t", "x", "y", {"s": ([1, 2], [3, 4])},
                                draw=drawn.append)])
    assert json.loads((tmp_path / "report.json").read_text()) == {"x": 1, "machine": machine}
    assert (tmp_path / "report.md").read_text() == (
        "# Title\n\nMachine: `h`, 2 cores, load average (1, 5, 15 min) at the start 0.5, at "
        "the end 1; torch t, commit c.\n\n## Part\n\nbody\n")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG" and len(drawn) == 1
    report.write(tmp_path / "only", {"y": 2}, name="numbers")  # no title: JSON alone
    assert [p.name for p in (tmp_path / "only").iterdir()] == ["numbers.json"]


def test_launcher_options_and_the_flags_every_rank_gets(tmp_path):
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    harness.add_common(p)
    assert harness.Launch.from_args(p.parse_args(["--out", str(tmp_path / "a")])) == \
        harness.Launch()
    srun = harness.Launch.from_args(p.parse_args(["--out", str(tmp_path / "b"), "--nice", "5",
                                                  "--launcher", "srun"]))
    assert srun == harness.Launch(0, True, 5, str((tmp_path / "b").resolve()))
    assert (tmp_path / "b").is_dir()  # the ranks' shared folder exists before they start
    assert harness.Launch.from_args(p.parse_args(["--out", str(tmp_path / "c"), "--launcher",
                                                  "srun", "--tmp", "/shared"])).tmp == "/shared"
    args = ranks.parse_args("r", ["gloo"], ["ddp"], [
        "allreduce", "--config", "gloo", "--sizes", "4,8", "--iters", "1", "--result", "r",
        "--torch-port", "1234", "--cores-per-rank", "2"])
    assert (args.sizes, args.torch_port, args.cores_per_rank) == ([4, 8], 1234, 2)


def test_benchmarks_read_no_hvdlm_variables():
    """Every setting is an option (benchmarks/README.md: what the environment still carries)."""
    found = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "benchmarks").rglob("*"))
             if p.suffix in (".py", ".sh") and "HVDLM_" in p.read_text()]
    assert not found


def test_timeline_summary_merges_fused_tensors(tmp_path):
    events = [{"name": "ALLREDUCE", "ph": "B", "ts": 0, "pid": 1},
              {"name": "ALLREDUCE", "ph": "B", "ts": 500, "pid": 2},
              {"name": "ALLREDUCE", "ph": "E", "ts": 1000, "pid": 1},
              {"name": "ALLREDUCE", "ph": "E", "ts": 2000, "pid": 2},
              {"name": "ALLREDUCE", "ph": "B", "ts": 5000, "pid": 1},
              {"name": "ALLREDUCE", "ph": "E", "ts": 6000, "pid": 1}]
    path = tmp_path / "timeline.json"
    path.write_text(json.dumps(events)[:-1] + ",")  # Horovod leaves the array open
    got = timeline.summarise_timeline(path, steps=1)
    assert got["ms_per_step"]["ALLREDUCE"] == pytest.approx(3.0)
    assert got["ops_per_step"]["ALLREDUCE"] == 2
    assert got["tensor_events_per_step"]["ALLREDUCE"] == 3


COMMANDS = ("preprocess", "verify", "train", "evaluate", "generate", "launch", "submit")


def benchmark_imports() -> dict[str, list[tuple[str, str | None, bool]]]:
    """benchmarks.X -> [(module, name or None, inside a function)] from its source."""
    out = {}
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        tree = ast.parse(path.read_text())
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                  for n in ast.walk(f)}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(a.name, None, id(node) in nested) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                found += [(node.module, a.name, id(node) in nested) for a in node.names]
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = found
    return out


def test_benchmark_imports_are_acyclic_public_and_at_the_top():
    imports = benchmark_imports()
    graph = {m: {f"{mod}.{name}" if f"{mod}.{name}" in imports else mod
                 for mod, name, _ in found} & set(imports) for m, found in imports.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + (module,))}"
        if module not in done:
            for dep in graph[module]:
                visit(dep, path + (module,))
            done.add(module)

    for module in graph:
        visit(module, ())
    for module, found in imports.items():
        for mod, name, nested in found:
            full = f"{mod}.{name}" if name else mod
            assert not any(full == f"hvdlm.{c}" or mod == f"hvdlm.{c}" for c in COMMANDS), \
                f"{module} imports the command module {full}: run it as a subprocess"
            assert not (mod.startswith("hvdlm") and name and name.startswith("_")), \
                f"{module} imports hvdlm's private {full}"
            assert not nested or mod.startswith("matplotlib"), \
                f"{module} imports {full} inside a function (only matplotlib may: optional)"


def test_torch_ranks_never_load_horovod():
    """The peers' ranks leave Horovod's framework library out (hvdlm.cluster's launcher uses
    only horovod.runner, pure Python)."""
    code = ("import sys, benchmarks.torch_ranks; "
            "print(any(m.startswith('horovod.torch') for m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_split_config_and_rank_result_files(tmp_path):
    assert harness.split_config("hvdlm+A=1+B=x=y", ("hvdlm",)) == ("hvdlm", {"A": "1", "B": "x=y"})
    with pytest.raises(SystemExit):
        harness.split_config("nope", ("hvdlm",))
    result = tmp_path / "result.json"
    harness.write_result(harness.rank_path(result, 1), {"step_times": [0.5]})
    harness.write_result(result, {"tokens_per_s": 2.0})
    assert harness.read_result(harness.rank_path(result, 1)) == {"step_times": [0.5]}
    harness.clear_results(result, 2)
    assert not list(tmp_path.iterdir())


def test_reports_without_matplotlib_say_how_to_get_plots(tmp_path):
    code = """
import argparse, sys
from pathlib import Path
sys.modules["matplotlib"] = None  # as if the hvdlm[bench] extra were not installed
from benchmarks import allreduce
rows = [allreduce.Row("horovod", 2, 1 << 20, 1e-3, 1.0, 1.0, "hvdlm"),
        allreduce.Row("torch", 2, 1 << 20, 2e-3, 0.5, 0.5, "gloo")]
info = {c: {"threads": 1, "env": {}} for c in ("hvdlm", "gloo")}
args = argparse.Namespace(np=2, iters=1, rounds=1, hosts=0, rate="1gbit", delay="0ms")
for _ in range(2):
    allreduce.write_report(Path(sys.argv[1]), rows, info, args)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("pip install 'hvdlm[bench]'") == 1, proc.stderr
    assert json.loads((tmp_path / "report.json").read_text())["median_ratio_hvdlm_vs_torch"] == 2
    assert "busbw" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "allreduce.png").exists()


@pytest.fixture(scope="module")
def allreduce_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("allreduce")
    run_module("benchmarks.allreduce", "--np", "2", "--sizes", "64K,1M", "--iters", "2",
               "--rounds", "1", "--out", out, timeout=240, check=True)
    return out


@pytest.mark.horovod
def test_allreduce_report(allreduce_report):
    report = json.loads((allreduce_report / "report.json").read_text())
    rows = report["results"]
    assert {r["config"] for r in rows} == {"hvdlm", "defaults", "gloo"}
    assert {r["backend"] for r in rows} == {"horovod", "torch"}
    for r in rows:
        assert AR_KEYS <= set(r)
        assert r["np"] == 2 and r["time_s"] > 0
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"])  # 2(N-1)/N = 1 at N = 2
    assert report["median_ratio_hvdlm_vs_torch"] > 0
    assert (allreduce_report / "allreduce.png").stat().st_size > 1000
    assert "busbw" in (allreduce_report / "report.md").read_text()


@pytest.mark.horovod
def test_scaling_report(tmp_path, byte_dataset, allreduce_report):
    out = tmp_path / "scaling"
    run_module("benchmarks.scaling", "--np", "2", "--mode", "weak", "--steps", "2",
               "--repeats", "1", "--data", byte_dataset, "--allreduce", allreduce_report,
               "--configs", "hvdlm,hvdlm-nograds,ddp", "--timeline", "--out", out,
               timeout=300, check=True)
    report = json.loads((out / "report.json").read_text())
    runs = report["runs"]
    assert {(r["config"], r["np"]) for r in runs} == {
        (config, n) for config in ("hvdlm", "hvdlm-nograds", "ddp") for n in (1, 2)}
    for r in runs:
        assert RUN_KEYS <= set(r) and r["tokens_per_s"] > 0
        if r["np"] == 1:
            assert r["efficiency"] == pytest.approx(1.0)
    model = report["model"]
    for key in ("alpha_s", "beta_s_per_byte", "compute_s", "grad_bytes", "networks"):
        assert key in model
    assert {"2", "4", "512"} <= set(model["predicted_efficiency"])
    assert model["straggler_factor"]["512"] >= model["straggler_factor"]["2"] >= 1
    assert model["compute_source"] == "hvdlm-nograds" and 0 < model["shared_throughput"] <= 1
    assert all(r["step_cv"] >= 0 and r["relative_step_times"] for r in runs)
    assert "ALLREDUCE" in report["timeline"]["ms_per_step"]
    for png in ("efficiency_weak.png", "tokens_per_s_weak.png", "predicted_networks.png"):
        assert (out / png).stat().st_size > 1000
    assert "Cost model" in (out / "report.md").read_text()


@pytest.mark.horovod
def test_train_overhead_and_dataloader(tmp_path, byte_dataset):
    proc = run_module("benchmarks.train_overhead", "--data", byte_dataset, "--steps", "2",
                      "--repeats", "1", "--out", tmp_path / "overhead", timeout=240, check=True)
    assert "plain PyTorch loop" in proc.stdout
    got = json.loads((tmp_path / "overhead" / "report.json").read_text())
    assert got["hvdlm_tokens_per_s"] > 0 and got["plain_tokens_per_s"] > 0
    run_module("benchmarks.dataloader", "--data", byte_dataset, "--seq-len", "64", "--batch", "4",
               "--steps", "20", "--repeats", "1", "--out", tmp_path / "loader", check=True)
    got = json.loads((tmp_path / "loader" / "report.json").read_text())
    assert got["ratio"] > 0 and got["raw_memmap_windows_per_s"] > 0


def test_families_train_each_family_at_one_size_and_write_the_reports(tmp_path, byte_dataset):
    from benchmarks.studies import families  # in this process: no interpreter start
    assert families.main(["--data", str(byte_dataset), "--budget", "0.3", "--params", "20000",
                          "--out", str(tmp_path)]) == 0
    got = json.loads((tmp_path / "families.json").read_text())
    runs = got["families"]
    assert list(runs) == ["gpt", "llama", "lstm", "gru", "cnn"]
    for name, run in runs.items():
        assert run["config"]["arch"] == name and abs(run["params"] - 20000) <= 6000, run["params"]
        assert run["steps"] >= 1 and run["train_s"] >= 0.3 and run["tokens_per_s"] > 0
        assert [c["step"] for c in run["curve"]][0] == 0 and len(run["curve"]) >= 2
        assert 0 < run["final"]["bits_per_byte"] < 20
    table = (tmp_path / "families.md").read_text()
    assert "| cnn | 4 x " in table and "python -m benchmarks.studies.families --budget 0.3" in table
    assert (tmp_path / "families.png").stat().st_size > 1000


def test_committed_families_report_comes_again_from_its_json(tmp_path):
    from benchmarks.studies import families
    families.write_reports(tmp_path, json.loads((ROOT / "docs" / "families.json").read_text()))
    assert (tmp_path / "families.md").read_text() == (ROOT / "docs" / "families.md").read_text()


def test_privacy_corpus_has_its_duplicates_and_the_report_remakes_from_its_json(tmp_path):
    """benchmarks.studies.privacy without its ~10-minute study: the corpus it builds (the deliberate
    duplicates, tests left out), and docs/privacy/report.md made again from report.json."""
    from benchmarks.studies import privacy  # in this process: no interpreter start
    root = tmp_path / "lib"
    (root / "tests").mkdir(parents=True)
    for i in range(30):
        (root / f"m{i:02d}.py").write_text(f"# module {i}\n" + "x = 1\n" * (70 + i))
    (root / "tests" / "test_a.py").write_text("assert True\n" * 100)
    got = privacy.build_corpus(root, tmp_path, 4000, seed=0, threads=1)
    texts = [p.read_text() for p in (tmp_path / "corpus").iterdir()]
    copies = sorted(texts.count(t) for t in set(texts))
    assert copies.count(100) == 4 and copies.count(10) == 8 and got["documents"] == len(texts)
    assert got["val_texts"] >= 1  # the probe's val texts: none of them is copied
    val = privacy.held_out(tmp_path / "corpus", tmp_path / "probe2", 0, 1)
    assert val and all(texts.count(t) == 1 for t in val)
    assert not any(t.startswith("assert") for t in texts)  # tests/ is not walked
    committed = ROOT / "docs" / "privacy"
    if not (committed / "report.json").exists():
        pytest.skip("no docs/privacy/report.json: run python -m benchmarks.studies.privacy")
    payload = json.loads((committed / "report.json").read_text())
    privacy.write_reports(tmp_path / "out", payload)
    made = (tmp_path / "out" / "report.md").read_text()
    assert made == (committed / "report.md").read_text()
    assert "| 100× | 4 |" in made and "| train, all |" in made
