"""What a run records besides its checkpoints, written by rank 0.

logs          RUN/metrics.jsonl, RUN/tb/ (TensorBoard), RUN/log.txt
files         RUN/config.toml, RUN/env.json, RUN/tokenizer.json, RUN/data_dir.txt
provenance    what produced each (re)start: versions, commit, hosts, devices, Slurm job
progress      a progress bar on a terminal, one line per log interval elsewhere
wandb_mirror  the metrics mirrored to Weights & Biases (optional)
"""
