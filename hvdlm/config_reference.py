"""docs/configuration.md, the reference of every config key, made from the fields of
hvdlm/config.py (their type, default, choices and doc); tests/test_config.py checks that the
committed file is this text. Regenerate it with:

    .venv/bin/python -c 'import hvdlm.config_reference as r; print(r.reference(), end="")' \
        > docs/configuration.md
"""
from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

import tomli_w

from hvdlm.config import Config

REGENERATE = (".venv/bin/python -c 'import hvdlm.config_reference as r; "
              "print(r.reference(), end=\"\")' > docs/configuration.md")


def _shown(value: Any) -> str:
    """A default as the reference table shows it: TOML's spelling, floats short (9.89e+14)."""
    if isinstance(value, float) and "e" in f"{value:g}":
        return f"{value:g}"
    return tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")


def reference() -> str:
    """docs/configuration.md: every key with its type, default and meaning, from the fields."""
    head = f"""# Configuration reference

<!-- Generated from the fields of hvdlm/config.py; do not edit. Regenerate with:
     {REGENERATE} -->

`python -m hvdlm.train` resolves its config as dataclass defaults, then the TOML file given
by `--config` (tables `[model]` and `[train]`), then `section.key=value` overrides on the
command line, in that order. `python -m hvdlm.train --print-config [--config FILE] [--ranks N]
[key=value ...]` prints the result with each key's meaning, the parameter count and a memory
estimate, without training. The resolved config is written to `RUN/config.toml` and kept in
every checkpoint.

Values: an int key takes a whole number only (`2.5` and `2.5e0` are refused, `1e3` is 1000),
within 64 bits; a float key a finite number (no `nan` or `inf`); a bool key `true`, `false`,
`1` or `0`; a key with choices one of them; a string key any text. A wrong value or an unknown
key stops the command with one line naming the key (exit 2). Examples: `configs/*.toml`. The
few settings that are environment variables instead: [environment.md](environment.md).
"""
    out = [head]
    for section in dataclasses.fields(Config):
        out += [f"## [{section.name}]", "", "| key | type | default | meaning |",
                "|---|---|---|---|"]
        hints = get_type_hints(section.default_factory)
        for f in dataclasses.fields(section.default_factory):
            kind = " \\| ".join(f.metadata.get("choices", ())) or hints[f.name].__name__
            doc = f.metadata.get("doc", "").replace("|", "\\|")
            out.append(f"| `{section.name}.{f.name}` | {kind} | `{_shown(f.default)}` | {doc} |")
        out.append("")
    return "\n".join(out)
