"""The report dict (hvdlm/explain/report.py) as one self-contained HTML page.

No script, no font, no request: styles inline, pictures inline (PNG data: URLs and SVG from
pictures.py), hover text in `title` attributes. Every number drawn comes from the dict, which
is also written beside the page as explain.json.
"""
from __future__ import annotations

import html
import math

import numpy as np

from hvdlm.explain import pictures

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222;
       padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 12px; } td, th { padding: 2px 8px;
  border-bottom: 1px solid #eee; text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; } td.tok, th.tok { text-align: left; font-family: monospace; }
.tokens { font-family: monospace; white-space: pre-wrap; word-break: break-all; line-height: 1.9;
  border: 1px solid #ddd; padding: 8px; max-height: 420px; overflow-y: auto; }
.tokens span { border-radius: 2px; } .tokens .focus { outline: 2px solid #222; }
.note { color: #555; font-style: italic; } .absent { color: #7a4a00; }
.grid { display: grid; gap: 6px; align-items: start; } .grid figure { margin: 0; }
figcaption { font-size: 11px; color: #555; text-align: center; }
img.map { image-rendering: pixelated; border: 1px solid #ccc; }
svg.chart text { font-size: 10px; fill: #333; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
td.hi { background: #ffe3a3; font-weight: 600; }
"""


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _tok(report: dict, i: int) -> str:
    return report["token_text"][str(i)] if str(i) in report["token_text"] else f"#{i}"


def _shown(text: str) -> str:
    """A token's text as it should read inside a table or tooltip (whitespace made visible)."""
    return repr(text)[1:-1] or "∅"


def render(report: dict) -> str:
    body = [_header(report)]
    if report.get("dataset"):
        body.append(_dataset(report, report["dataset"]))
    for k, text in enumerate(report["texts"]):
        body.append(_text(report, text, k))
    title = _e(f"hvdlm explain: {report['run']['path']}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _header(report: dict) -> str:
    run, model = report["run"], report["model"]
    rows = [("run", run["path"]), ("checkpoint", f"{run['checkpoint']} (step {run['step']})"),
            ("trained on", f"{run['world_size']} rank(s)"),
            ("model", ", ".join(f"{k} {v}" for k, v in model.items())),
            ("device", report["device"]), ("seconds", _f(report["seconds"]))]
    table = "".join(f"<tr><th class=tok>{_e(k)}</th><td class=tok>{_e(str(v))}</td></tr>"
                    for k, v in rows)
    notes = "".join(f"<p class=note>{_e(n)}</p>" for n in report["notes"])
    return f"<h1>What the model sees</h1><table id=run>{table}</table>{notes}"


def _scores_table(scores: dict) -> str:
    cells = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in scores)
    values = "".join(f"<td>{_f(v, 5)}</td>" for v in scores.values())
    return f"<table class=scores><tr>{cells}</tr><tr>{values}</tr></table>"


def _text(report: dict, text: dict, k: int) -> str:
    return "\n".join([f"<h2 id=text-{k}>{_e(text['title'])}</h2>", _surprisal(report, text, k),
                      _attention(report, text, k), _lens(report, text, k),
                      _attribution(report, text, k), _recurrent(text, k)])


def _surprisal(report: dict, text: dict, k: int) -> str:
    ids, bits, focus = text["ids"], text["surprisal_bits"], text["focus"]["position"]
    spans = [f'<span title="position 0: {_e(_shown(_tok(report, ids[0])))} (nothing predicts '
             f'it)">{_e(_tok(report, ids[0]))}</span>']
    for p in range(1, len(ids)):
        top = ", ".join(f"{_shown(_tok(report, i))} {q:.3f}"
                        for i, q in zip(text["top_ids"][p - 1], text["top_p"][p - 1]))
        tip = f"position {p}: {_shown(_tok(report, ids[p]))}, {bits[p - 1]:.2f} bits\ntop: {top}"
        cls = ' class="focus"' if p == focus else ""
        spans.append(f'<span{cls} style="background:{pictures.surprisal_colour(bits[p - 1])}" '
                     f'title="{_e(tip)}">{_e(_tok(report, ids[p]))}</span>')
    notes = []
    if len(text["windows"]) > 1:
        notes.append(f"{len(ids)} tokens are more than the model reads at once: scored in "
                     f"{len(text['windows'])} windows (each starts where the last ended, as "
                     "evaluate cuts a split); the sections below look at the window holding "
                     f"position {focus}, tokens {text['focus']['window'][0]}–"
                     f"{text['focus']['window'][1] - 1}.")
    if text["given_tokens"] > len(ids):
        notes.append(f"Cut to the first {len(ids)} of {text['given_tokens']} tokens "
                     "(--max-tokens).")
    worst = np.argsort(-np.asarray(bits), kind="stable")[:10]
    rows = "".join(
        f"<tr><td>{p + 1}</td><td class=tok>{_e(_shown(_tok(report, ids[p + 1])))}</td>"
        f"<td>{bits[p]:.3f}</td>"
        + "".join(f"<td class=tok>{_e(_shown(_tok(report, i)))} {q:.3f}</td>"
                  for i, q in zip(text["top_ids"][p], text["top_p"][p])) + "</tr>"
        for p in worst.tolist())
    head = "".join(f"<th class=tok>#{r + 1}</th>" for r in range(len(text["top_ids"][0])))
    return (f"<section id=surprisal-{k} class=surprisal><h3>1. Surprisal</h3>"
            f"{_scores_table(text['scores'])}"
            + "".join(f"<p class=note>{_e(n)}</p>" for n in notes)
            + "<p class=note>Each token coloured by its surprisal, -log2 p(token | the tokens "
            "before it), pale 0 bits to red 12 or more; hover for the top predictions. The "
            "outlined token is the one attributed below.</p>"
            f"<div class=tokens>{''.join(spans)}</div><h3>Most surprising positions</h3>"
            f"<table><tr><th>position</th><th class=tok>token</th><th>bits</th>{head}</tr>{rows}"
            "</table></section>")


def _absent(section: str, title: str, k: int, why: str) -> str:
    return f"<section id={section}-{k} class={section}><h3>{title}</h3><p class=absent>" \
           f"Not shown: {_e(why)}.</p></section>"


def _attention(report: dict, text: dict, k: int) -> str:
    att = text["attention"]
    if "absent" in att:
        return _absent("attention", "2. Attention", k, att["absent"])
    layers, heads, cells = att["layers"], att["heads"], att["cells"]
    size = max(56, min(150, 1100 // heads))
    figures = []
    for layer in range(layers):
        for head in range(heads):
            rgb = pictures.heatmap(np.asarray(att["maps"][layer][head]), vmax=1.0, gamma=0.5)
            name = f"layer {layer + 1} head {head + 1}"
            figures.append(f"<figure>{pictures.img(rgb, size, size, name)}"
                           f"<figcaption>L{layer + 1} H{head + 1}</figcaption></figure>")
    span = att["span"]
    summary = att["summaries"]
    rows = []
    for layer in range(layers):
        for head in range(heads):
            vals = [summary[layer][key][head] for key in ("distance", "entropy_bits",
                                                          "previous", "first")]
            cells_html = "".join(
                f"<td{' class=hi' if j >= 2 and v is not None and v > 0.5 else ''}>"
                f"{_f(v)}</td>" for j, v in enumerate(vals))
            rows.append(f"<tr><td>{layer + 1}</td><td>{head + 1}</td>{cells_html}</tr>")
    checks = att["checks"]
    pooled = f" averaged down to {cells}×{cells} cells" if cells < span[1] - span[0] else ""
    return (f"<section id=attention-{k} class=attention><h3>2. Attention</h3>"
            f"<p class=note>Tokens {span[0]}–{span[1] - 1}: row = query, column = key, darker = "
            f"more attention (square-root scale){pooled}. Computed explicitly as softmax(QK^T/"
            f"√d) with the causal mask: rows sum to 1 within {_f(checks['row_sum_max_error'])},"
            f" and weights × V give the fused kernel's output within "
            f"{_f(checks['fused_max_error'])}.</p>"
            f"<div class=grid style=\"grid-template-columns: repeat({heads}, {size + 4}px)\">"
            f"{''.join(figures)}</div><h3>Per head</h3><p class=note>Averaged over query "
            "positions 1 onward. Highlighted: more than half the attention on the previous "
            "token (a previous-token head) or on the first token (a resting place).</p>"
            "<table><tr><th>layer</th><th>head</th><th>mean distance</th><th>entropy (bits)"
            "</th><th>on previous</th><th>on first</th></tr>" + "".join(rows)
            + "</table></section>")


def _lens(report: dict, text: dict, k: int) -> str:
    att = text["attention"]
    if "absent" in att:
        return _absent("logit-lens", "3. Logit lens", k, att["absent"])
    lens, span = att["lens"], att["span"]
    true_p = np.asarray(lens["true_p"])
    width = min(1100, max(200, 8 * true_p.shape[1]))
    shade = np.clip(np.log10(np.maximum(true_p, 1e-4)) + 4, 0, 4)   # 1e-4 .. 1 as 0 .. 4
    picture = pictures.img(pictures.heatmap(shade, vmax=4.0), width, 16 * true_p.shape[0],
                           "p(true next token): rows = layers, columns = positions")
    focus = text["focus"]["position"] - 1 - span[0]            # input index predicting it
    first = max(0, focus - 11)
    cols = list(range(first, focus + 1))
    ids = text["ids"]
    head = "".join(f"<th class=tok>{span[0] + c}→{_e(_shown(_tok(report, ids[span[0] + c + 1])))}"
                   "</th>" for c in cols)
    rows = "".join(
        f"<tr><th class=tok>{_e(name)}</th>" + "".join(
            f"<td class=tok title=\"top p {lens['top_p'][r][c]:.3f}\">"
            f"{_e(_shown(_tok(report, lens['top_ids'][r][c])))} · {lens['true_p'][r][c]:.3f}"
            "</td>" for c in cols) + "</tr>"
        for r, name in enumerate(lens["layers"]))
    return (f"<section id=logit-lens-{k} class=logit-lens><h3>3. Logit lens</h3><p class=note>"
            "The residual stream after each block, read through the final layer norm and the "
            "output head. Picture: probability of the true next token, white 10^-4 (or less) to "
            "blue 1, log scale "
            f"(tokens {span[0]}–{span[1] - 1}). After the last block this is the model's own "
            f"output (largest logit difference {_f(att['checks']['lens_last_layer_max_error'])}"
            f").</p>{picture}<h3>Top token · p(true next) up to the attributed position</h3>"
            f"<table><tr><th class=tok>layer</th>{head}</tr>{rows}</table></section>")


def _attribution(report: dict, text: dict, k: int) -> str:
    att = text["attribution"]
    if "absent" in att:
        return _absent("attribution", "4. Attributions", k, att["absent"])
    ids, a = text["ids"], att["context"][0]
    parts = [f"<p class=note>Which context tokens the prediction of position {att['position']} "
             f"({_e(_shown(_tok(report, att['target'])))}, log p = {att['logprob']:.4f}) leans "
             "on, through the token embeddings: red raises it, blue lowers it.</p>"]
    methods = [("gradient × input", att["gradient_x_input"])]
    ig = att.get("integrated_gradients")
    if ig:
        methods.append((f"integrated gradients ({ig['steps']} steps)", ig["attributions"]))
    for name, values in methods:
        scale = max((abs(v) for v in values), default=1.0)
        spans = "".join(f'<span style="background:{pictures.signed_colour(v, scale)}" '
                        f'title="{_e(f"position {a + i}: {v:.4g}")}">'
                        f"{_e(_tok(report, ids[a + i]))}</span>" for i, v in enumerate(values))
        spans += f'<span class="focus">{_e(_tok(report, att["target"]))}</span>'
        order = np.argsort(-np.abs(values), kind="stable")[:10].tolist()
        rows = "".join(f"<tr><td>{a + i}</td><td class=tok>{_e(_shown(_tok(report, ids[a + i])))}"
                       f"</td><td>{values[i]:.4g}</td></tr>" for i in order)
        parts.append(f"<h3>{_e(name)}</h3><div class=tokens>{spans}</div><table><tr>"
                     f"<th>position</th><th class=tok>token</th><th>attribution</th></tr>{rows}"
                     "</table>")
    if ig:
        parts.append(f"<p class=note>Completeness: the attributions sum to "
                     f"{sum(ig['attributions']):.5g}; f(input) - f(zero embeddings) = "
                     f"{ig['f_input'] - ig['f_baseline']:.5g} (gap "
                     f"{100 * ig['completeness_gap']:.3g}%).</p>")
    body = "".join(parts)
    return f"<section id=attribution-{k} class=attribution><h3>4. Attributions</h3>{body}" \
           f"</section>"


def _recurrent(text: dict, k: int) -> str:
    rec = text["recurrent"]
    if "absent" in rec:
        return _absent("recurrent", "5. Recurrent state", k, rec["absent"])
    charts = []
    norms = {f"layer {i + 1}": layer["hidden_norm"] for i, layer in enumerate(rec["layers"])}
    charts.append(pictures.lines(norms, "position", "‖h‖"))
    cells = {f"layer {i + 1}": layer["cell_norm"] for i, layer in enumerate(rec["layers"])
             if "cell_norm" in layer}
    if cells:
        charts.append(pictures.lines(cells, "position", "‖c‖"))
    for i, layer in enumerate(rec["layers"]):
        if layer["gates"]:
            gates = layer["gates"]
            charts.append(pictures.lines({g: v["mean"] for g, v in gates.items()}, "position",
                                         f"layer {i + 1} mean gate", y_range=(-1.0, 1.0)))
            charts.append(pictures.lines({g: v["saturated"] for g, v in gates.items()},
                                         "position", f"layer {i + 1} saturated",
                                         y_range=(0.0, 1.0)))
    return (f"<section id=recurrent-{k} class=recurrent><h3>5. Recurrent state "
            f"({_e(rec['arch'])})</h3><p class=note>Over the attributed position's window: "
            "hidden-state norms per layer and, for LSTM/GRU, each gate's mean activation and "
            "the share of its units saturated (beyond 0.05/0.95). Recomputed step by step from "
            f"the weights; they give torch's outputs within {_f(rec['torch_max_error'])}.</p>"
            f"<div class=charts>{''.join(charts)}</div></section>")


def _dataset(report: dict, ds: dict) -> str:
    cal = ds["calibration"]
    hist = ds["histogram_bits"]
    charts = [pictures.bars(hist["edges"], hist["count"], "loss (bits)", "tokens"),
              pictures.lines({"loss": ds["loss_by_position_bits"]}, "position in window",
                             "mean loss (bits)"),
              pictures.lines({"model": cal["accuracy"]}, "confidence", "accuracy",
                             x=[(a + b) / 2 for a, b in zip(cal["edges"], cal["edges"][1:])],
                             y_range=(0.0, 1.0), diagonal=True)]
    cal_rows = "".join(f"<tr><td>{a:.1f}–{b:.1f}</td><td>{n}</td><td>{_f(c)}</td><td>{_f(r)}"
                       "</td></tr>" for a, b, n, c, r in zip(cal["edges"], cal["edges"][1:],
                                                           cal["count"], cal["confidence"],
                                                           cal["accuracy"]))

    def docs(title: str, rows: list[dict]) -> str:
        body = "".join(f"<tr><td>{d['shard']}</td><td>{d['document']}</td><td>{d['tokens']}</td>"
                       f"<td>{d['loss']:.4f}</td><td class=tok>{_e(_shown(d['snippet']))}</td>"
                       "</tr>" for d in rows)
        return (f"<h3>{title}</h3><table><tr><th>shard</th><th>document</th><th>tokens</th>"
                f"<th>loss</th><th class=tok>begins</th></tr>{body}</table>")

    windows = f"{ds['windows']} of {ds['windows_in_split']}" \
        if ds["windows"] < ds["windows_in_split"] else f"all {ds['windows']}"
    return (f"<section id=dataset class=dataset><h2>Split {_e(ds['split'])}</h2>"
            f"<p class=note>{windows} windows scored as hvdlm.evaluate scores them.</p>"
            f"{_scores_table(ds['scores'])}<div class=charts>{''.join(charts)}</div>"
            f"<p>Expected calibration error: <b>{cal['ece']:.4f}</b> (confidence = probability "
            "of the top prediction; accuracy = how often it is the next token).</p>"
            "<table><tr><th>confidence</th><th>tokens</th><th>mean confidence</th><th>accuracy"
            f"</th></tr>{cal_rows}</table>"
            + docs("Hardest documents", ds["hardest"]) + docs("Easiest documents", ds["easiest"])
            + f"<p class=note>Ranked: {ds['documents_scored']} documents, those with at least "
            f"{ds['min_document_tokens']} predicted tokens; loss in nats per token.</p></section>")
