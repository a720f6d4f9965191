"""hvdlm: raw text in; a trained language model, its evaluation and a scaling report out.

The data flow follows the module names: corpus → tokenizer → shards (preprocess) →
data → models → distributed/train → checkpoint → evaluate/generate.
"""

__version__ = "0.1.0"
