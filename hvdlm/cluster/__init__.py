"""The cluster part: where ranks come from and how they talk; the only code that knows
Horovod, Slurm, submitit or subprocess.

hostlist (Slurm node lists, the rank plan, the rank environment) → rendezvous (rank 0's
authenticated server and its published address) → launch (srun/submitit tasks or local hosts
become ranks) and submit (submitit jobs with preemption and requeue); requeue decides how a
batch job ends; runlock keeps one job per run folder; distributed holds every Horovod call the
training loop makes (the only horovod.torch import) and refuses wrong launches; malloc keeps a
CPU rank's freed memory, which ranks sharing a node's cores pay for.
"""
