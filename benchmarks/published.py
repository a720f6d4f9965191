"""The cost model against published scaling figures, every input taken from the sources first.

    python -m benchmarks.published

Horovod's benchmark of tf_cnn_benchmarks (synthetic ImageNet data, 64 images per GPU, fp32)
on Pascal GPUs, 4 per server, over a RoCE-capable 25 Gbit/s network: "Horovod achieves 90%
scaling efficiency for both Inception V3 and ResNet-101" on 128 servers (512 GPUs; Horovod's
docs/benchmarks.rst and README), and the same 90% on 32 servers (128 GPUs; Horovod's README
of 2017 and Sergeev & Del Balso, "Horovod: fast and easy distributed deep learning in
TensorFlow", arXiv:1802.05799). Inception V3 is the model whose inputs are published too:

- compute c: one P100 trains Inception V3 at 142 images/s with 64 images per step (TensorFlow's
  benchmarks page, "Details for NVIDIA DGX-1 (NVIDIA Tesla P100)", synthetic data), so
  c = 64/142 s; Horovod's "Pascal GPUs" are taken to be P100s;
- gradients: 23,851,784 parameters (Inception V3 as Keras counts it), fp32, all fused;
- network: 25 Gbit/s at 90% of line rate (costmodel.NETWORKS' rule), 5 µs per RoCE hop plus
  5 µs of NCCL software per ring step, no step-time variation (synthetic data, m = 1);
- the model as it stands: one flat ring over all GPUs whose slowest link (the servers' NIC)
  sets β, nothing of the allreduce hidden behind the backward pass (h = 0), no per-step metrics
  allreduce (tf_cnn_benchmarks does none).

These were fixed before the prediction was compared; `ROWS` holds them and `error` is
predicted / published - 1. docs/scaling.md states the result (tests/test_gpu_check.py checks
that it is what the code computes). ResNet-101 and VGG-16 are left out: no single-GPU
throughput for them is published on the same page.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Sequence

from benchmarks import costmodel

ROCE_25G = costmodel.Network("25GbE RoCE (Horovod's benchmark)", 5e-6, 25e9 / 8 * 0.9,
                             software_latency_s=5e-6, relative_steps=(1.0,))
INCEPTION_V3_PARAMS = 23_851_784
P100_INCEPTION_V3_STEP_S = 64 / 142  # 64 images at 142 images/s


@dataclass(frozen=True)
class Published:
    """A published weak-scaling efficiency and the model's inputs for it."""
    name: str
    source: str
    network: costmodel.Network
    params: float
    compute_s: float
    n: int
    published: float
    overlap: float = 0.0
    small_per_step: int = 0

    def predicted(self) -> float:
        ring = self.network.ring(costmodel.Ring(0.0, 0.0))  # the network's own α, β only
        compute = self.network.compute(costmodel.Compute(self.compute_s))
        return costmodel.efficiency(self.n, compute, 4 * self.params, ring, self.overlap,
                                    self.small_per_step)

    def error(self) -> float:
        return self.predicted() / self.published - 1


SOURCE = ("Horovod docs/benchmarks.rst and README; Sergeev & Del Balso 2018 (arXiv:1802.05799); "
          "TensorFlow benchmarks page (P100, Inception V3, 142 images/s)")
ROWS = (Published("Inception V3, 512 GPUs (128 servers x 4), 25 GbE RoCE", SOURCE, ROCE_25G,
                  INCEPTION_V3_PARAMS, P100_INCEPTION_V3_STEP_S, 512, 0.90),
        Published("Inception V3, 128 GPUs (32 servers x 4), 25 GbE RoCE", SOURCE, ROCE_25G,
                  INCEPTION_V3_PARAMS, P100_INCEPTION_V3_STEP_S, 128, 0.90))


def table(rows: Sequence[Published] = ROWS) -> str:
    return "\n".join(f"{r.name}: predicted {r.predicted():.3f}, published {r.published:.2f}, "
                     f"error {r.error():+.1%}" for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
