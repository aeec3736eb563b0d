"""A small streaming EDN reader for Jepsen histories.

Jepsen writes a history (`history.edn`, `jepsen.history` dumps, Knossos test files) as
EDN op maps, in one of these layouts, all read here without loading the whole file:

- one map per line: `{:process 0, :type :invoke, :f :read, :value nil}`;
- the whole history as one vector `[...]` or list `(...)`, maps broken across lines;
- any mix of the above with `;` comments and `#_` discarded forms.

`iter_maps(path)` yields `(line, map)` for each op map as soon as its closing `}` is read:
a top-level map, or an element of the top-level vector/list (the container itself is never
built, so memory is one op at a time). Values are read as:

| EDN                         | Python                                              |
|-----------------------------|-----------------------------------------------------|
| `nil` `true` `false`        | `None` `True` `False`                               |
| `42` `-7` `123N` `0x1F`    | `int`                                               |
| `1.5` `1e3` `##Inf` `2.5M`  | `float` (`M`: `decimal.Decimal`)                    |
| `22/7`                      | `fractions.Fraction`                                |
| `"a\\n\\"b"`                | `str` (escapes `\\t \\n \\r \\b \\f \\\\ \\" \\uXXXX`)          |
| `\\c` `\\newline`           | `str` (one character)                               |
| `:read` `:ns/kw`            | `Keyword` (a `str` subclass that keeps the colon)   |
| `foo` `clojure.core/inc`    | `Symbol` (a `str` subclass)                         |
| `[..]` `(..)`               | `tuple` (hashable, so values can be model states)   |
| `{..}`                      | `Map` (a `dict` subclass, hashable)                 |
| `#{..}`                     | `frozenset`                                         |
| `#inst "..."` `#uuid "..."` | the string inside                                   |
| `#jepsen.history.Op{..}`    | the map inside (any record tag `#a.b.C{..}`, `#error`, `#object`: the form) |

Errors raise `HistoryError(path, line, reason)`: an unterminated string or collection
(the line it started on), a closing bracket that does not match, an unreadable token, a map
with a duplicate key, an unknown tag (`#foo`; see `known_tag`), or a top-level form that is
not a map or a vector/list of maps.

The grammar is edn-format's (https://github.com/edn-format/edn). The `edn_format` package on
PyPI reads a whole string at once (`loads`/`loads_all` over a PLY lexer), not a stream, so
the reader is this small tokenizer instead.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from onceproof.checkers.history import HistoryError, open_history


class Keyword(str):
    """An EDN keyword, kept with its colon: `:read` reads as `Keyword(":read")`."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """The keyword without its colon (`:read` -> `read`)."""
        return self[1:]


class Symbol(str):
    """An EDN symbol (`foo`, `clojure.core/inc`)."""

    __slots__ = ()


class Map(dict):  # type: ignore[type-arg]
    """An EDN map: a dict that can be hashed (a model state, a set element)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))


_TOKEN = re.compile(r'''
    (?P<ws>[\s,]+)
  | (?P<comment>;.*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<open_string>"(?:[^"\\]|\\.)*\\?$)
  | (?P<open>\#\{|[\[({])
  | (?P<close>[\])}])
  | (?P<discard>\#_)
  | (?P<special>\#\#(?:Inf|-Inf|NaN))
  | (?P<tag>\#[A-Za-z][^\s,\[\](){}"]*)
  | (?P<char>\\(?:newline|space|tab|return|formfeed|backspace|u[0-9a-fA-F]{4}|.))
  | (?P<atom>[^\s,\[\](){}";]+)
''', re.VERBOSE)
_INT = re.compile(r"[+-]?\d+N?")
_FLOAT = re.compile(r"[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?M?")
_RATIO = re.compile(r"[+-]?\d+/\d+")
_HEX = re.compile(r"[+-]?0[xX][0-9a-fA-F]+N?")  # Clojure's reader (e.g. the hash in `#object[... 0x1b2c3d ...]`)
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", '"': '"', "'": "'"}
_CHARS = {"newline": "\n", "space": " ", "tab": "\t", "return": "\r", "formfeed": "\f", "backspace": "\b"}
_CLOSERS = {"[": "]", "(": ")", "{": "}", "#{": "}"}
_SPECIAL = {"##Inf": float("inf"), "##-Inf": float("-inf"), "##NaN": float("nan")}


def _unescape(body: str) -> str:
    if "\\" not in body:
        return body
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)",
                  lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 5 else _ESCAPES.get(m.group(1), m.group(1)),
                  body, flags=re.DOTALL)


def atom(text: str) -> Any:
    """One EDN scalar from its text (`nil`, `42`, `22/7`, `1.5M`, `:kw`, `"s"`, a symbol).
    Raises ValueError when the text is not one."""
    if text == "nil":
        return None
    if text == "true":
        return True
    if text == "false":
        return False
    if text.startswith(":") and len(text) > 1:
        return Keyword(text)
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return _unescape(text[1:-1])
    if text[0].isdigit() or (text[0] in "+-" and len(text) > 1 and text[1].isdigit()):
        if _INT.fullmatch(text):
            return int(text.rstrip("N"))
        if _RATIO.fullmatch(text):
            return Fraction(text)
        if _HEX.fullmatch(text):
            return int(text.rstrip("N"), 16)
        if _FLOAT.fullmatch(text):
            try:
                return Decimal(text[:-1]) if text.endswith("M") else float(text)
            except InvalidOperation:
                pass
        raise ValueError(f"{text!r} is not an EDN number")
    if text in _SPECIAL:
        return _SPECIAL[text]
    return Symbol(text)


class _Frame:
    __slots__ = ("opener", "items", "line", "tags", "discard")

    def __init__(self, opener: str, line: int) -> None:
        self.opener = opener
        self.items: list[Any] = []
        self.line = line
        self.tags: list[str] = []  # tags waiting for the next form
        self.discard = 0  # `#_` markers waiting for the next form


def _build(opener: str, items: list[Any], path: str, line: int) -> Any:
    if opener == "{":
        if len(items) % 2:
            raise HistoryError(path, line, "a map with an odd number of forms (a key without its value)")
        try:
            m = Map(zip(items[::2], items[1::2]))
        except TypeError:
            raise HistoryError(path, line, "a map key that is itself a map or set of maps") from None
        if len(m) * 2 != len(items):  # edn-format: "a map with duplicate keys is invalid"
            seen: set[Any] = set()
            dup = next(k for k in items[::2] if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise HistoryError(path, line, f"a map with the key {_show(dup)} twice (an EDN map's keys are distinct)")
        return m
    if opener == "#{":
        try:
            return frozenset(items)
        except TypeError:
            raise HistoryError(path, line, "a set element that cannot be compared") from None
    return tuple(items)


_TAGS = ("#inst", "#uuid", "#error", "#object")  # Clojure's printer: Throwables, unreadable objects


def known_tag(tag: str) -> bool:
    """Whether `tag` (with its `#`) is one Jepsen histories hold: `#inst`, `#uuid`, Clojure's
    `#error {...}` (an exception in an op's :error) and `#object[...]`, or a record's class name
    (`#jepsen.history.Op{...}`, `#knossos.op.Op{...}`: a tag with a dot, as Clojure prints
    records). Any other tag (`#foo`) has no reader there: edn-format says a reader must refuse it."""
    return tag in _TAGS or "." in tag


def iter_forms(path: str, *, ops_in_top_container: bool = True) -> Iterator[tuple[int, Any]]:
    """(line, form) for each top-level EDN form of the file at `path`, streaming. With
    `ops_in_top_container`, a top-level vector or list is not returned whole: its elements
    are yielded one by one instead (a Jepsen history written as one vector)."""
    fh = open_history(path, "r", encoding="utf-8", errors="replace")
    top = _Frame("", 0)
    stack: list[_Frame] = [top]
    container: _Frame | None = None  # the top-level vector/list whose elements are yielded
    pending_string: list[str] | None = None  # a string spanning lines
    string_line = 0
    out: list[tuple[int, Any]] = []

    def emit(value: Any, line: int, start: int) -> None:
        frame = stack[-1]
        if frame.discard:
            frame.discard -= 1
            return
        while frame.tags:
            tag = frame.tags.pop()
            if tag == "#uuid" or tag == "#inst":
                value = str(value)
            elif not known_tag(tag):
                raise HistoryError(path, line, f"an unknown tag {tag} (expected one Jepsen writes: #inst, #uuid, "
                                               "#error, #object, or a record such as #jepsen.history.Op{...})")
        if frame is top or frame is container:
            out.append((start, value))
        else:
            frame.items.append(value)

    with fh:
        for n, line in enumerate(fh, 1):
            pos = 0
            if pending_string is not None:
                m = re.match(r'(?:[^"\\]|\\.)*"', line, re.DOTALL)
                if m is None:
                    pending_string.append(line)
                    continue
                pending_string.append(m.group(0)[:-1])
                emit(_unescape("".join(pending_string)), n, string_line)
                pending_string = None
                pos = m.end()
            length = len(line)
            while pos < length:
                m = _TOKEN.match(line, pos)
                if m is None:  # pragma: no cover - the atom alternative matches any other char
                    raise HistoryError(path, n, f"cannot read {line[pos:pos + 20]!r}")
                pos = m.end()
                kind = m.lastgroup
                text = m.group()
                if kind == "ws" or kind == "comment":
                    continue
                if kind == "string":
                    emit(_unescape(text[1:-1]), n, n)
                elif kind == "open":
                    if stack[-1] is top and container is None and text in "[(" and ops_in_top_container \
                            and not top.tags and not top.discard:
                        container = _Frame(text, n)
                        stack.append(container)
                    else:
                        stack.append(_Frame(text, n))
                elif kind == "close":
                    frame = stack[-1]
                    if frame is top:
                        raise HistoryError(path, n, f"a closing {text!r} with nothing open before it")
                    if _CLOSERS[frame.opener] != text:
                        raise HistoryError(path, n, f"{text!r} closes the {frame.opener!r} opened on line "
                                                    f"{frame.line} (expected {_CLOSERS[frame.opener]!r})")
                    if frame.tags or frame.discard:
                        raise HistoryError(path, n, f"{' '.join(frame.tags) or '#_'} with no form after it")
                    stack.pop()
                    if frame is container:
                        container = None
                        continue
                    emit(_build(frame.opener, frame.items, path, frame.line), n, frame.line)
                elif kind == "discard":
                    stack[-1].discard += 1
                elif kind == "tag":
                    stack[-1].tags.append(text)
                elif kind == "open_string":
                    pending_string, string_line = [text[1:]], n
                elif kind == "char":
                    body = text[1:]
                    emit(_CHARS.get(body) or (chr(int(body[1:], 16)) if len(body) == 5 and body[0] == "u"
                                              else body), n, n)
                else:
                    try:
                        emit(atom(text), n, n)
                    except ValueError as e:
                        raise HistoryError(path, n, str(e)) from None
            if out:
                yield from out
                out.clear()
    if pending_string is not None:
        raise HistoryError(path, string_line, "a string that is never closed (a missing '\"')")
    if len(stack) > 1:
        frame = stack[-1]
        raise HistoryError(path, frame.line, f"the {frame.opener!r} opened here is never closed "
                                             f"(expected {_CLOSERS[frame.opener]!r} before the end of the file)")


def iter_maps(path: str) -> Iterator[tuple[int, Map]]:
    """(line, op map) for each op of a Jepsen EDN history, streaming: top-level maps, or the
    maps of a top-level vector/list. Raises HistoryError on a form that is not a map."""
    for line, form in iter_forms(path):
        if not isinstance(form, dict):
            raise HistoryError(path, line, "expected an EDN op map {:process .., :type .., :f .., :value ..} "
                                           f"(or a vector of them), got {_show(form)}")
        yield line, form  # type: ignore[misc]


def text(value: Any) -> str:
    """`value` (as read from EDN, or an op's input/output built from it) written back as EDN, for
    messages: nil, true/false, numbers, `:keyword` (a Keyword or a str that starts with `:`),
    "strings", [vectors] (lists and tuples), #{sets}, {maps}; anything else as Python's repr
    (edn-format.org)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Keyword, Symbol)) or isinstance(value, str) and value.startswith(":") and " " not in value:
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, Decimal):
        return f"{value}M"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(text(v) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "#{" + " ".join(text(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{text(k)} {text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _show(form: Any) -> str:
    shown = text(form)
    return shown if len(shown) <= 40 else shown[:37] + "..."
