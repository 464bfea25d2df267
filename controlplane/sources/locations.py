"""Where each object and each of its fields was written: file and line, for `analyze -f`.

The YAML is composed (`yaml.compose_all`: nodes with their marks, nothing constructed)
a second time beside the loader's parse, so the loader stays as fast as it is. A
document's fields are keyed by the paths the parsers name in their errors and warnings
(`spec.http[1].route[0].destination.host`); a path not written (a default, a field
named by the model's form rather than the file's) falls back to its nearest written
parent, then to the document's first line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from controlplane.model.meta import DEFAULT_NAMESPACE, Key
from controlplane.sources.manifests import LOADER, ManifestError, read_text

_LAST_STEP = re.compile(r"(\[[^\[\]]*\]|\.[^.\[\]]*)$")


@dataclass
class DocumentLines:
    """One document: its file, its first line, and the line of each field path."""

    file: str
    line: int  # 1-based
    paths: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int:
        while path:
            found = self.paths.get(path)
            if found is not None:
                return found
            trimmed = _LAST_STEP.sub("", path)
            if trimmed == path:
                break
            path = trimmed
        return self.line


def _scalar(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _get(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if _scalar(k) == key:
                return v
    return None


def _key(node: yaml.Node) -> Key:
    """The key a document claims, as manifests.raw_key reads it from the parsed form."""
    meta = _get(node, "metadata")
    name = _scalar(_get(meta, "name")) if meta is not None else None
    namespace = _scalar(_get(meta, "namespace")) if meta is not None else None
    return Key(str(_scalar(_get(node, "kind"))), namespace or DEFAULT_NAMESPACE,
               name if name is not None else "<unnamed>")


def _walk(node: yaml.Node, path: str, line: int, out: dict[str, int]) -> None:
    out.setdefault(path, line)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            name = _scalar(k)
            if name is None:
                continue
            # A name with dots or brackets is written as the parsers write map keys.
            step = f".{name}" if re.fullmatch(r"[A-Za-z0-9_$-]+", name) else f"[{name!r}]"
            _walk(v, f"{path}{step}" if path else step.lstrip("."), k.start_mark.line + 1,
                  out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, f"{path}[{i}]", item.start_mark.line + 1, out)


def locate(text: str, file: str) -> dict[Key, DocumentLines]:
    """Each document's lines by the key it claims (the last document of a key wins, as
    the loader keeps it); `kind: List` items each count as a document. Empty when the
    text is not YAML (the loader reports that)."""
    out: dict[Key, DocumentLines] = {}
    try:
        nodes = list(yaml.compose_all(text, Loader=LOADER))
    except yaml.YAMLError:
        return out
    for node in nodes:
        if not isinstance(node, yaml.MappingNode):
            continue
        items = _get(node, "items")
        docs = (items.value if _scalar(_get(node, "kind")) == "List"
                and isinstance(items, yaml.SequenceNode) else [node])
        for doc in docs:
            if not isinstance(doc, yaml.MappingNode):
                continue
            lines = DocumentLines(file, doc.start_mark.line + 1)
            _walk(doc, "", lines.line, lines.paths)
            out[_key(doc)] = lines
    return out


class FileLines:
    """Lines of files read again on demand, each file once per version (size, mtime):
    for findings about objects a watched directory serves, which are few, so the
    loader's parse is not slowed down for everything else. Used by one thread at a
    time (the analysis')."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._files: dict[str, tuple[tuple[int, int], dict[Key, DocumentLines]]] = {}

    def where(self, file: str, key: Key, path: str) -> tuple[str, int]:
        try:
            st = os.stat(file)
            version = (st.st_mtime_ns, st.st_size)
            cached = self._files.get(file)
            if cached is None or cached[0] != version:
                cached = (version, locate(read_text(Path(file), self.max_bytes), file))
                self._files[file] = cached
        except (OSError, ManifestError):
            return file, 0
        lines = cached[1].get(key)
        return (file, lines.line_of(path)) if lines is not None else (file, 0)
