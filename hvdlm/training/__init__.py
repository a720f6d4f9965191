"""The training part: token windows to a trained model and its scores, in pure PyTorch.

data (windows in a world-size-independent global order) → trainer (the loop, with callbacks)
using optim (AdamW, schedule) and scoring (loss, accuracy, bits per byte) → checkpoint (one
training-state record, saved and restored in one place). Every Horovod call goes through
hvdlm.cluster.distributed. record/ writes what a run records; faults injects test faults.
"""
