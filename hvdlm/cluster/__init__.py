"""The cluster part: where ranks come from and how they talk; the only code that knows
Horovod, Slurm, submitit or subprocess.

hostlist (Slurm node lists, the rank plan by Horovod's own code, the rank environment) →
rendezvous (rank 0's authenticated server and its published address) → launch (srun/submitit
tasks or local hosts become ranks) and submit (submitit jobs); requeue is the one stop/requeue
rule that slurm/train.sbatch and submit share; runlock keeps one job per run folder;
distributed holds every Horovod call the training loop makes (the only horovod.torch import)
and refuses wrong launches; children and slurm_options are small helpers of launch and submit.
"""
