"""Security habits: no shell with user strings; files honour the user's umask."""
import re
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, small_corpus


def test_no_shell_true_anywhere():
    offenders = [str(p.relative_to(ROOT)) for folder in ("hvdlm", "benchmarks")
                 for p in (ROOT / folder).rglob("*.py")
                 if re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(", p.read_text())]
    assert offenders == []


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
            for p in folder.rglob("*") if p.is_file()}


def test_created_files_follow_the_umask(tmp_path):
    corpus = small_corpus(tmp_path / "corpus", n_files=3)
    script = (
        "import os, sys\n"
        "os.umask(0o027)\n"
        "from hvdlm import preprocess, train\n"
        f"assert preprocess.main([{str(corpus)!r}, '--out', {str(tmp_path / 'data')!r},"
        " '--tokenizer', 'byte', '--val-fraction', '0.3']) == 0\n"
        f"assert train.main(['--data', {str(tmp_path / 'data')!r}, '--out', {str(tmp_path / 'run')!r},"
        " 'model.n_layer=1', 'model.n_embd=16', 'model.n_head=2', 'model.seq_len=16',"
        " 'train.max_steps=2']) == 0\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=180,
                   capture_output=True)
    modes = {**_modes(tmp_path / "data"), **_modes(tmp_path / "run")}
    assert any(name.endswith(".h5") for name in modes) and any(n.endswith(".pt") for n in modes)
    too_open = {name: oct(mode) for name, mode in modes.items() if mode & 0o027}
    assert too_open == {}
    assert all(mode & 0o600 == 0o600 for mode in modes.values())  # and the user can read them
