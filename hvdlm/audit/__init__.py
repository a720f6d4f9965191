"""What did a model memorise? The library behind `python -m hvdlm.audit`.

    runmodel.py   a run's model on a device: batched scoring, greedy and sampled continuation
    skewnorm.py   the skew-normal fit of the exposure estimate
    exposure.py   canary exposure (Carlini et al. 2019): exact enumeration or the estimate
    extraction.py k-extractable training documents (Carlini et al. 2022), by repetition
    pii_scan.py   PII (hvdlm/text/pii.py's detector) in unconditioned samples
    report.py     audit.json and audit.md, written whole or not at all
"""
