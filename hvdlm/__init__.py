"""hvdlm: raw text in; a trained language model, its evaluation and a scaling report out.

    text/       corpus → tokenizer → shards (+ manifest, verify): `python -m hvdlm.preprocess`
    models/     GPT decoder, LSTM/GRU/RNN and gated convolutional language models, decoding:
                pure PyTorch
    training/   data → trainer (optim, scoring) → checkpoint: pure PyTorch
    cluster/    hostlist, rendezvous, launch, submit, requeue: where ranks come from (srun,
                submitit, local hosts); distributed: every Horovod call of the training loop
    explain/    what a model learned (hvdlm.explain); audit/: what it memorised (hvdlm.audit)
    config, errors, cli, output, versions   shared: one config tree, error types and exit
                codes, CLI plumbing, complete-or-absent output folders, installed versions

The commands are thin modules at the top (explain and audit: NAME/command.py), listed once in
commands.py; `hvdlm COMMAND ...`, `hvdlm-COMMAND` and `python -m hvdlm.COMMAND` run them.
"""

__version__ = "0.1.0"
