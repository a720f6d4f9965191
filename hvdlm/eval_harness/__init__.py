"""EleutherAI's lm-evaluation-harness on any hvdlm run (gpt, llama, lstm, gru, rnn, cnn), with
no export: the model type `hvdlm` (hvdlm/eval_harness/model.py).

    pip install 'hvdlm[eval]'
    python -m hvdlm.eval_harness --model hvdlm --model_args run=RUN,checkpoint=PATH,device=cpu \
        --tasks TASK --include_path DIR --batch_size 16

The arguments are the harness's own (`lm_eval --help`); this entry point registers `hvdlm`
first, because lm-eval's own `lm_eval` script finds only the model types it ships. From Python:
`import hvdlm.eval_harness.model`, then `lm_eval.simple_evaluate(model="hvdlm", ...)`.
`--model_args`: run (the run folder), checkpoint (default: its newest), device (cpu, cuda or
auto; default cpu). Tasks that read local files are YAML files in an --include_path folder
(docs/evaluation.md).
"""
from __future__ import annotations

from hvdlm.errors import UsageError


def main() -> int:
    """`lm_eval`'s command line with the `hvdlm` model type registered."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise UsageError("lm-evaluation-harness is not installed: pip install 'hvdlm[eval]'"
                         ) from None
    from hvdlm.eval_harness import model  # noqa: F401 (registers the model type)
    cli_evaluate()
    return 0
