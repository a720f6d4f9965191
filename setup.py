"""hvdlm: data-parallel language-model training with Horovod on HPC clusters."""
import runpy
from pathlib import Path

from setuptools import find_packages, setup

# The console scripts come from the one list of commands, read without importing hvdlm.
COMMANDS = runpy.run_path(str(Path(__file__).resolve().parent / "hvdlm" / "commands.py"))

setup(
    name="hvdlm",
    version="0.1.0",
    description="Raw text to trained language models with Horovod ring-allreduce, on Slurm or a laptop",
    packages=find_packages(include=["hvdlm", "hvdlm.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1,<2.15",
        "numpy>=1.24,<3",
        "h5py>=3.8,<4",
        # Not here: Horovod 0.28.1 is built from source, patched, by scripts/install_horovod.sh
        # (`make install PYTHON=...`); pip would build it unpatched, which fails on torch 2.x.
        "submitit>=1.5,<2",
        "tokenizers>=0.15,<0.24",
        "tqdm>=4.60,<5",
        "tensorboard>=2.12,<3",
        "tomli>=2.0,<3; python_version<'3.11'",
        "tomli-w>=1.0,<2",  # writes RUN/config.toml (any string or number reads back as it was)
        "safetensors>=0.4,<1",  # reads model.safetensors from anyone (hvdlm/models/safetensors.py)
    ],
    extras_require={
        "dev": [
            "pytest>=7.4,<10",
            "pytest-timeout>=2.2,<3",
            "hypothesis>=6.80,<7",
            # Only to prove exported models load in transformers; tests never reach the hub.
            "transformers==5.24.0",
            "wandb==0.31.0",  # offline mode only
            # the formats extra, pinned: the tests read parquet and .zst corpora
            "pyarrow==26.0.1",
            "zstandard==0.25.0",
            # the eval extra, pinned, and what the harness's own hf model needs, to compare
            "lm-eval==0.4.13",
            "accelerate==1.15.0",
            # scripts/mutation.sh (make mutation): mutation testing of the pure modules
            "mutmut==3.8.1",
        ],
        # More corpus formats for hvdlm.preprocess: .parquet (pyarrow) and .jsonl.zst/.txt.zst
        # (zstandard).
        "formats": ["pyarrow>=14,<27", "zstandard>=0.22,<0.26"],
        # Plots of the benchmark reports (benchmarks/report.py); without it they write only
        # report.json and report.md.
        "bench": ["matplotlib>=3.7,<4"],
        "wandb": ["wandb>=0.17,<1"],
        # lm-evaluation-harness on hvdlm runs: python -m hvdlm.eval_harness (docs/evaluation.md)
        "eval": ["lm-eval>=0.4.13,<0.5"],
    },
    entry_points={"console_scripts": COMMANDS["console_scripts"]()},
)
