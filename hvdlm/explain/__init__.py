"""Looking inside a trained model: the numbers behind `python -m hvdlm.explain`.

    python -m hvdlm.explain --run RUN --text "def main(" --out REPORT

scores      per-token surprisal, top-k predictions, calibration, through training's scoring
transformer GPT/Llama attention computed explicitly (checked against the fused kernel), logit lens
attribution gradient x input and integrated gradients over the token embeddings (any model)
recurrent   LSTM/GRU/RNN hidden states and gates recomputed from the weights (checked)
report      the report of a text or of a dataset split, as one JSON-ready dict
page        that dict as one self-contained HTML page (pictures: pictures.py, inline SVG/PNG)

Pure PyTorch and NumPy on top of hvdlm.models and hvdlm.training.scoring; no Horovod.
"""
