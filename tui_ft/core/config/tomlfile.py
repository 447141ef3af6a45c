"""Reading a TOML file: the one place that turns bytes into nested dicts plus a key -> line map.

Presets and plans both read through :func:`read_toml` / :func:`parse_toml`:

* the file is opened once and read once, at most :data:`MAX_BYTES` (+1) bytes,
  so ``--preset <(...)`` (a FIFO) works and ``/dev/zero`` is refused instead of
  read forever; directories, sockets and block devices are refused;
* a UTF-8 byte-order mark is dropped; bytes that are not UTF-8 are reported
  with the line they are on;
* before ``tomllib`` sees the text, values nested more than :data:`MAX_DEPTH`
  deep and dotted keys of more than :data:`MAX_KEY_PARTS` parts are refused
  (``tomllib`` would hit a ``RecursionError`` or take quadratic time on them);
* TOML syntax errors name their line, without ``tomllib``'s "(at line ...)";
* :func:`locate_lines` maps ``"table.key"`` to the line it is defined on
  (no Python TOML parser exposes key positions), for error messages.

Every problem raises :class:`TomlFileError` (file, line, field, message); the
callers turn it into their own error type. Field ``"toml"`` is a problem with
the text, the caller's ``what`` (``"preset"``, ``"plan"``) one with the file.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_KEY_PARTS",
    "TomlFileError",
    "read_text",
    "parse_toml",
    "read_toml",
    "locate_lines",
    "line_of",
    "TOMLDecodeError",
    "loads",
]

MAX_BYTES = 1 << 20  # 1 MiB: a preset is about 1 KiB, a plan a few
MAX_DEPTH = 32  # arrays / inline tables inside each other
MAX_KEY_PARTS = 32  # parts of one dotted key or table header

TOMLDecodeError = tomllib.TOMLDecodeError
loads = tomllib.loads

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


class TomlFileError(Exception):
    """A file that cannot be read as TOML: ``FILE:LINE: field: message``."""

    def __init__(self, file: str, line: int | None, field: str, message: str):
        super().__init__(file, line, field, message)
        self.file, self.line, self.field, self.message = file, line, field, message

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}"


class _TooComplex(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(line, message)
        self.line, self.message = line, message


# --------------------------------------------------------------------------- reading


def read_text(path: str | os.PathLike[str], what: str = "file", *, regular_only: bool = False) -> str:
    """The file's text: opened and read once, at most MAX_BYTES, BOM dropped, UTF-8 checked.

    Regular files, FIFOs (``<(...)``) and character devices are read; anything
    else (a directory, a socket) is refused. ``regular_only`` (tui-ft's own files, such as
    ``logs/RUN/preset.toml`` that ``resume`` reads): only a regular file, opened through
    :func:`tui_ft.core.common.files.open_regular`, so a FIFO put there is refused at once
    instead of blocking the reader. Errors name the file as given, field ``what`` for the
    file itself and ``"toml"`` for its bytes.
    """
    name = os.fspath(path)
    if regular_only:
        from tui_ft.core.common.files import read_regular_bytes

        try:
            raw = read_regular_bytes(name, MAX_BYTES)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise TomlFileError(name, None, what, f"cannot read: {why}") from None
        return _decode(name, raw)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise TomlFileError(name, None, what, f"cannot read: {exc.strerror or exc}") from None
    try:
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise TomlFileError(name, None, what, "cannot read: is a directory, expected a TOML file")
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
                raise TomlFileError(name, None, what, "cannot read: not a regular file, expected a TOML file")
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_BYTES:
                chunk = os.read(fd, MAX_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise TomlFileError(name, None, what, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise TomlFileError(name, None, what, f"file is larger than {MAX_BYTES // 1024} KiB; is it really a {what}?")
    return _decode(name, b"".join(chunks))


def _decode(name: str, raw: bytes) -> str:
    """UTF-8 text without its BOM; bytes that are not UTF-8 are a ``"toml"`` error at their line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TomlFileError(name, line, "toml", "file is not valid UTF-8 text") from None
    return text[1:] if text.startswith("\ufeff") else text


def parse_toml(text: str, path: str = "<string>") -> tuple[dict[str, Any], dict[str, int]]:
    """Parse TOML text; return (the document, :func:`locate_lines` of it).

    Refuses absurd nesting and dotted keys before ``tomllib`` runs, and turns
    ``tomllib``'s errors into :class:`TomlFileError` at the error's line.
    """
    path = os.fspath(path)
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        lines = _locate(text)
    except _TooComplex as exc:
        raise TomlFileError(path, exc.line, "toml", exc.message) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(path, text, exc) from None
    except RecursionError:  # pragma: no cover - the depth check above comes first
        raise TomlFileError(path, None, "toml", f"values nested more than {MAX_DEPTH} deep") from None
    return data, lines


def read_toml(path: str | os.PathLike[str], what: str = "file", *,
              regular_only: bool = False) -> tuple[dict[str, Any], dict[str, int], str]:
    """:func:`read_text` then :func:`parse_toml`: (document, lines, text)."""
    name = os.fspath(path)
    text = read_text(name, what, regular_only=regular_only)
    data, lines = parse_toml(text, name)
    return data, lines, text


def _toml_error(path: str, text: str, exc: Exception) -> TomlFileError:
    msg = getattr(exc, "msg", None) or str(exc)
    line = getattr(exc, "lineno", None)
    m = _TOML_POS.search(msg)
    if m:
        line = int(m.group(1))
        msg = msg[: m.start()]
    elif _TOML_END.search(msg):
        msg = _TOML_END.sub("", msg) + " at end of file"
        line = max(1, len(text.splitlines()))
    return TomlFileError(path, line, "toml", msg.strip() or "invalid TOML")


# --------------------------------------------------------------------------- line locator


def line_of(lines: dict[str, int], field: str, default: int | None = None) -> int | None:
    """Line of ``field`` ("data.target"): the key's line, else the nearest enclosing table's, else ``default``."""
    parts = field.split(".") if field else []
    while parts:
        key = ".".join(parts)
        if key in lines:
            return lines[key]
        parts.pop()
    return default


def _parse_key(s: str, i: int, lineno: int = 0) -> tuple[list[str], int] | None:
    """Parse a (dotted) TOML key at ``s[i:]``; return its parts and the index after it."""
    parts: list[str] = []
    n = len(s)
    while True:
        if len(parts) >= MAX_KEY_PARTS:
            raise _TooComplex(lineno, f"a dotted key with more than {MAX_KEY_PARTS} parts")
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            return None
        c = s[i]
        if c == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            if j >= n:
                return None
            raw = s[i : j + 1]
            try:
                parts.append(json.loads(raw))
            except ValueError:
                parts.append(raw[1:-1])
            i = j + 1
        elif c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                return None
            parts.append(s[i + 1 : j])
            i = j + 1
        else:
            m = _BARE.match(s, i)
            if not m:
                return None
            parts.append(m.group())
            i = m.end()
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == ".":
            i += 1
            continue
        return parts, i


def _scan(s: str, i: int, depth: int, lineno: int = 0) -> tuple[int, str | None, str]:
    """Scan a value from ``s[i:]``: track bracket depth, skip strings and comments.

    Returns (depth, open multi-line string delimiter or None, the text with
    string contents blanked out). Raises _TooComplex past MAX_DEPTH.
    """
    out = list(s)
    n = len(s)
    while i < n:
        c = s[i]
        if s.startswith('"""', i) or s.startswith("'''", i):
            delim = s[i : i + 3]
            j = s.find(delim, i + 3)
            if j < 0:
                return depth, delim, "".join(out[:i])
            j += 3
            while j < n and s[j] == delim[0]:  # up to two quotes may end the content
                j += 1
            for k in range(i, j):
                out[k] = " "
            i = j
        elif c == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            for k in range(i, min(j + 1, n)):
                out[k] = " "
            i = j + 1
        elif c == "'":
            j = s.find("'", i + 1)
            j = n if j < 0 else j
            for k in range(i, min(j + 1, n)):
                out[k] = " "
            i = j + 1
        elif c == "#":
            return depth, None, "".join(out[:i])
        else:
            if c in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    raise _TooComplex(lineno, f"arrays or inline tables nested more than {MAX_DEPTH} deep")
            elif c in "]}":
                depth -= 1
            i += 1
    return depth, None, "".join(out)


def _inline_keys(blank: str, base: list[str], lineno: int, lines: dict[str, int]) -> None:
    """Record the keys of inline tables in a (string-blanked) value."""
    stack: list[tuple[str, list[str]]] = []  # (bracket, table path)
    last_key: list[str] = []
    i, n = 0, len(blank)
    expect_key = False
    while i < n:
        c = blank[i]
        if c == "{":
            path = base if not stack else (stack[-1][1] + last_key if last_key else stack[-1][1])
            stack.append(("{", path))
            expect_key, last_key = True, []
            i += 1
        elif c == "[":
            stack.append(("[", (stack[-1][1] + last_key) if stack else base))
            expect_key, last_key = False, []
            i += 1
        elif c in "}]":
            if stack:
                stack.pop()
            expect_key, last_key = False, []
            i += 1
        elif c == ",":
            expect_key = bool(stack) and stack[-1][0] == "{"
            i += 1
        elif expect_key and c not in " \t":
            parsed = _parse_key(blank, i, lineno)
            if parsed and parsed[1] < n and blank[parsed[1]] == "=":
                parts, j = parsed
                path = stack[-1][1]
                if len(path) + len(parts) > MAX_KEY_PARTS:
                    raise _TooComplex(lineno, f"a key more than {MAX_KEY_PARTS} tables deep")
                for k in range(1, len(parts) + 1):
                    lines.setdefault(".".join(path + parts[:k]), lineno)
                last_key = parts
                i = j + 1
            else:
                i += 1
            expect_key = False
        else:
            i += 1


def _locate(text: str) -> dict[str, int]:
    lines: dict[str, int] = {}
    table: list[str] = []
    ml: str | None = None
    depth = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if ml is not None:
            j = raw.find(ml)
            if j < 0:
                continue
            rest_start = j + 3
            while rest_start < len(raw) and raw[rest_start] == ml[0]:
                rest_start += 1
            ml = None
            depth, ml, _ = _scan(raw, rest_start, depth, lineno)
            continue
        if depth > 0:
            depth, ml, _ = _scan(raw, 0, depth, lineno)
            continue
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("["):
            arr = s.startswith("[[")
            parsed = _parse_key(s, 2 if arr else 1, lineno)
            if parsed:
                table = parsed[0]
                for k in range(1, len(table) + 1):
                    lines.setdefault(".".join(table[:k]), lineno)
            continue
        parsed = _parse_key(raw, 0, lineno)
        if not parsed:
            continue
        parts, i = parsed
        if i >= len(raw) or raw[i] != "=":
            continue
        full = table + parts
        if len(full) > MAX_KEY_PARTS:
            raise _TooComplex(lineno, f"a key more than {MAX_KEY_PARTS} tables deep")
        for k in range(len(table) + 1, len(full) + 1):
            lines.setdefault(".".join(full[:k]), lineno)
        depth, ml, blank = _scan(raw, i + 1, 0, lineno)
        value = blank[i + 1 :].strip()
        if value.startswith("{") or value.startswith("["):
            _inline_keys(value, full, lineno, lines)
    return lines


def locate_lines(text: str) -> dict[str, int]:
    """Map "table.key" (and "table") to the 1-based line where it is first defined.

    Handles ``[table]`` / ``[[table]]`` headers, ``key = value`` lines, dotted
    keys (``optim.lr = 1e-3`` at top level) and the keys of inline tables
    (which get the line of the inline table). Multi-line strings and arrays
    are skipped. It is a locator for messages, not a parser: the text must
    also pass ``tomllib``. Text too deep for :func:`parse_toml` gives the lines
    found up to that point.
    """
    try:
        return _locate(text)
    except _TooComplex:
        return {}
