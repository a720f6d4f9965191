"""The text part: raw text to tokens on disk.

corpus (find, read, clean, fingerprint; pii redacts) → tokenizer (byte-level BPE) → workers (a pool
that cleans and encodes in order) → pipeline (the tokenizer, task and merge steps; the merge
plants canaries and records dupcounts for hvdlm.audit) → shards (HDF5 + manifest.json, and
their full verification). Nothing here knows about models, Horovod or Slurm.
"""
