"""Each method's paper, as its registration names it (``register_method(..., paper=...)``, what
``suite list methods`` prints), with a link where the text carries an arXiv id, a DOI or a
GitHub address; and a row label split into its methods and their arguments, so the site can
link each method name to its paper and show the arguments as the row's configuration."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

ARXIV = re.compile(r"arXiv:\s*(\d{4}\.\d{4,5})(v\d+)?", re.IGNORECASE)
DOI = re.compile(r"doi:\s*(10\.\d{4,9}/[^\s;,()]+)", re.IGNORECASE)
GITHUB = re.compile(r"(?:https?://)?github\.com/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)")
# A row label's suffix that is no method argument: " (tuned)", " (at lora's tuned lr)".
SUFFIX = re.compile(r"\s\([^()]*\)$")


@dataclass(frozen=True)
class Citation:
    method: str
    text: str  # the paper as the registry names it
    url: str  # "" where the text carries no arXiv id, DOI or GitHub address


@dataclass(frozen=True)
class Part:
    """One method of a row label (``nf4+lora:r=16`` has two) and its non-default arguments."""

    name: str
    args: str  # "r=16,alpha=32" as the canonical label writes it; "" at the defaults
    citation: Citation | None


def paper_url(text: str) -> str:
    """A link for a paper reference: its arXiv abstract, its DOI, or a GitHub address in it."""
    if m := ARXIV.search(text):
        return f"https://arxiv.org/abs/{m.group(1)}"
    if m := DOI.search(text):
        return f"https://doi.org/{m.group(1).rstrip('.')}"
    if m := GITHUB.search(text):
        return f"https://github.com/{m.group(1).rstrip('.')}"
    return ""


@functools.lru_cache(maxsize=512)
def citation(method: str) -> Citation | None:
    """The registered method's paper; None for a method this install does not register or that names none."""
    from suite.registry import METHODS

    if method not in METHODS:
        return None
    text = str(METHODS.get(method).paper or "").strip()
    return Citation(method, text, paper_url(text)) if text else None


def split_label(variant: str) -> tuple[list[Part], str]:
    """A row label as its methods (with arguments) and its suffix (" (tuned)"); a label whose pieces
    are not all registered methods stays one part, named as written, with no arguments."""
    from suite.registry import METHODS

    label = str(variant)
    suffix = ""
    if m := SUFFIX.search(label):
        label, suffix = label[: m.start()], m.group(0)
    pieces = [p.partition(":") for p in label.split("+")]
    if not label or not all(name in METHODS for name, _, _ in pieces):
        return [Part(str(variant), "", None)], ""
    return [Part(name, args, citation(name)) for name, _, args in pieces], suffix


def configuration(variant: str) -> str:
    """The non-default arguments of a row ("r=16, alpha=32"; per method in a composition:
    "nf4: blocksize=32; lora: r=16"); "" where every method runs at its defaults."""
    parts, _ = split_label(variant)
    with_args = [p for p in parts if p.args]
    if len(parts) == 1:
        return ", ".join(with_args[0].args.split(",")) if with_args else ""
    return "; ".join(f"{p.name}: {', '.join(p.args.split(','))}" for p in with_args)


def method_names(variant: str) -> str:
    """A row label without its arguments: "nf4+lora (tuned)" for "nf4+lora:r=16 (tuned)"."""
    parts, suffix = split_label(variant)
    return "+".join(p.name for p in parts) + suffix


def references(variants: list[str]) -> list[Citation]:
    """The papers of every method in these row labels, once each, by method name."""
    found: dict[str, Citation] = {}
    for v in variants:
        for p in split_label(v)[0]:
            if p.citation is not None:
                found.setdefault(p.name, p.citation)
    return [found[k] for k in sorted(found)]
