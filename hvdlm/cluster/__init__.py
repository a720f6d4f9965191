"""The cluster part: where ranks come from. The only code that knows Slurm, submitit,
horovod.runner or subprocess.

hostlist (Slurm node lists, the rank plan, the rank environment) → rendezvous (rank 0's
server and its published address) → launch (srun/submitit tasks or local hosts become ranks)
and submit (submitit jobs with preemption and requeue); requeue decides a batch job's end.
"""
