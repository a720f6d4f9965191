"""The training part: token windows to a trained model and its scores.

data (windows in a world-size-independent global order) → trainer (the loop, with callbacks)
using optim (AdamW, schedule), distributed (every Horovod call) and scoring (loss, accuracy,
bits per byte) → checkpoint (one training-state record, saved and restored in one place).
runlog writes what a run logs; malloc and faults support the loop on CPU and in tests.
"""
