"""Each rank's GPU (hvdlm/cluster/devices.py), CUDA faked at the edge: the device count and the
GPU's identity are parameters, the environment is what srun or horovodrun would set."""
import pytest

from hvdlm.cluster.devices import gpu_index, gpu_key, refuse_shared
from hvdlm.errors import UsageError
from tests.cluster.conftest import slurm_env

NODE = "gpu[01-02]"


def task(localid, **extra):
    """The environment of a task of `srun -N 2 --ntasks-per-node=4`, node 1."""
    return slurm_env(4 + localid, localid, 1, NODE, "4(x2)", 8, **extra)


def test_every_gpu_visible_each_local_rank_takes_its_own():
    # srun --gres=gpu:4: every task sees the node's 4 GPUs (the same CUDA_VISIBLE_DEVICES).
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert [gpu_index(r, 4, 4, task(r, **env)) for r in range(4)] == [0, 1, 2, 3]
    # horovodrun on a workstation: no Slurm at all.
    assert [gpu_index(r, 2, 2, {}) for r in range(2)] == [0, 1]


@pytest.mark.parametrize("binding", [
    {"SLURM_GPUS_PER_TASK": "1"},                                       # --gpus-per-task=1
    {"SLURM_GPU_BIND": "single:1"},                                     # --gpu-bind=single:1
    {"SLURM_STEP_GPUS": "0,1,2,3"},                                     # a per-task subset
])
def test_one_gpu_per_task_each_takes_the_one_it_sees(binding):
    # Slurm set each task's CUDA_VISIBLE_DEVICES to its own GPU: each sees one, as device 0.
    for r in range(4):
        assert gpu_index(r, 4, 1, task(r, CUDA_VISIBLE_DEVICES=str(r), **binding)) == 0


def test_a_rank_without_a_gpu_is_refused_in_one_line():
    with pytest.raises(UsageError, match=r"local rank 2 sees no GPU \(CUDA_VISIBLE_DEVICES=\)"):
        gpu_index(2, 4, 0, task(2, CUDA_VISIBLE_DEVICES=""))
    with pytest.raises(UsageError, match="sees no GPU .*CUDA_VISIBLE_DEVICES unset"):
        gpu_index(0, 1, 0, {})


def test_more_ranks_than_gpus_without_a_binding_is_refused():
    # 4 tasks on a node with 2 GPUs that every task sees: two ranks would share each.
    with pytest.raises(UsageError, match="4 ranks on this node but each sees only 2 GPU"):
        gpu_index(3, 4, 2, task(3, CUDA_VISIBLE_DEVICES="0,1"))


def test_two_ranks_that_chose_one_gpu_are_refused():
    # --gpu-bind=closest can give two tasks the same GPU: their keys (host, UUID) collide.
    a, b = gpu_key(None, "gpu01", "GPU-aaaa"), gpu_key(None, "gpu01", "GPU-bbbb")
    other_host = gpu_key(None, "gpu02", "GPU-aaaa")
    refuse_shared([a, b, other_host])  # all distinct: accepted
    with pytest.raises(UsageError, match="ranks 0 and 2 would share one GPU"):
        refuse_shared([a, b, a])
