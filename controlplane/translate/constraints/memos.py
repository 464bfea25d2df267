"""Memos: a sub-message's violations by its serialized bytes.

Meshes repeat themselves: the same retry policy on every route, the same endpoint in a
service's cluster and in its subset's. A sub-message the compiled walker calls rather
than inlines is looked up by its bytes first (one C call) and walked only when new; the
result (violations relative to it) is kept. Equal bytes are an equal message, so the
answer is the same, as long as no rule depends on the time of the check (Envoy has none;
building one turns memos off). Each type's memo watches its own hit rate and stops
serializing when hits are rare, trying again now and then.
"""

from __future__ import annotations

from controlplane.translate.violations import Out, Violation

_MEMO_SIZE = 1 << 14  # entries per type; a full memo starts over
_MEMO_KEY_MAX = 1024  # bytes: bigger sub-messages are walked, not kept (memory)
_MEMO_PROBE = 400  # misses before judging the hit rate
_MEMO_RETRY = 1 << 12  # calls of `check` before memos that are off are tried again
_MEMO_OK = True


class _Memo:
    __slots__ = ("hits", "misses", "on", "table")

    def __init__(self) -> None:
        self.table: dict[bytes, tuple[Violation, ...]] = {}  # cleared, never replaced
        self.hits = self.misses = 0
        self.on = _MEMO_OK  # the generated code looks up only then


_MEMOS: dict[str, _Memo] = {}
# What the compiled walk of an Any found, by type URL and packed bytes (the same
# typed_config on every route is decoded and walked once); forgotten with the memos.
_ANY_RESULTS: dict[tuple[str, bytes], tuple[Violation, ...]] = {}


def _memo_put(memo: _Memo, key: bytes, out: Out, start: int) -> None:
    """Keep what a walk of a new sub-message found (out[start:]); judge the hit rate."""
    table = memo.table
    if len(table) >= _MEMO_SIZE:
        table.clear()
    if len(key) <= _MEMO_KEY_MAX:
        table[key] = tuple(out[start:])
    memo.misses += 1
    if memo.misses >= _MEMO_PROBE:
        if memo.hits * 4 < memo.misses:  # under 20% hits: not worth serializing
            memo.on = False
            table.clear()
        memo.hits = memo.misses = 0


def _retry_memos() -> None:
    if _MEMO_OK:
        for memo in _MEMOS.values():
            memo.on = True


def _no_memo() -> None:
    global _MEMO_OK
    _MEMO_OK = False
    for memo in _MEMOS.values():
        memo.table.clear()
        memo.on = False
    _ANY_RESULTS.clear()


def reset_memos() -> None:
    """Forget every memoised result (benchmarks measure a cold check with it)."""
    for memo in _MEMOS.values():
        memo.table.clear()
        memo.hits = memo.misses = 0
        memo.on = _MEMO_OK
    _ANY_RESULTS.clear()

