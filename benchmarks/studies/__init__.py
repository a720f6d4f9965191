"""Studies: questions about models answered end to end with hvdlm's own commands, each writing
a report that is committed under docs/ (unlike the measurements in benchmarks/, which time
hvdlm's parts against a baseline).

    python -m benchmarks.studies.families   # GPT, LSTM, GRU, CNN at equal size and time
    python -m benchmarks.studies.privacy    # what a small model memorises of a real corpus
"""
