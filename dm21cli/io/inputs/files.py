"""Reading input files: regular files only, bounded, and YAML with line numbers.

Only regular files are opened (after a ``stat``, so a FIFO never blocks) and at
most MAX_TEXT_FILE_BYTES are read.  The YAML is composed into nodes
(``yaml.compose``) so that every key, list item and atom line keeps its line
number for error messages.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from dm21cli.core.errors import InputError
from dm21cli.io.inputs.fields import dotted_path, show_value

#: job files and .xyz files larger than this (bytes) are refused; more is never read.
MAX_TEXT_FILE_BYTES = 16_000_000

#: an ``scf.guess`` chkfile larger than this (bytes) is refused.
MAX_CHKFILE_BYTES = 4_000_000_000


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def stat_regular(path: Path, fail, limit: int) -> int:
    """Size in bytes of `path`, a regular file of at most `limit` bytes.

    The file is only stat'ed (a FIFO or a device is never opened, so nothing
    blocks); `fail(message)` builds the InputError for every other case.
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise fail("no such file") from None
    except PermissionError:
        raise fail("permission denied") from None
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    except ValueError:  # embedded NUL byte and the like
        raise fail("invalid file name") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise fail(f"is {_file_kind(info.st_mode)}, not a regular file")
    if info.st_size > limit:
        raise fail(f"file too large ({info.st_size:,} bytes; at most {limit:,} are read)")
    return info.st_size


def read_text_file(path: Path, display: str, key: dict | None = None) -> str:
    """File contents as text; `key` (file/line/field of the key naming the file) locates errors.

    Only regular files of at most `MAX_TEXT_FILE_BYTES` are read, and never
    more than that many bytes (a file growing while it is read is refused too).
    """
    where = key if key is not None else {"file": display}

    def fail(message: str) -> InputError:
        if key is not None:
            return InputError(f"{message}: {display}", **key)
        return InputError(message, **where)

    stat_regular(path, fail, MAX_TEXT_FILE_BYTES)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, open does not wait
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise fail("no such file") from None
    except PermissionError:
        raise fail("permission denied") from None
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise fail("is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            raw = stream.read(MAX_TEXT_FILE_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_TEXT_FILE_BYTES:
        raise fail(f"file too large (more than {MAX_TEXT_FILE_BYTES:,} bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError("not a UTF-8 text file", file=display, line=line,
                         field=(key or {}).get("field")) from None


class _Walker:
    """Turns a composed YAML node tree into Python data, recording line numbers."""

    MAX_NODES = 100_000
    MAX_DEPTH = 40

    def __init__(self, loader: yaml.SafeLoader, file: str):
        self.loader = loader
        self.file = file
        self.lines: dict[tuple, int] = {}
        self.nodes: dict[tuple, yaml.Node] = {}
        self._count = 0
        self._active: set[int] = set()

    def _error(self, message: str, node: yaml.Node, path: tuple) -> InputError:
        return InputError(message, file=self.file, line=node.start_mark.line + 1,
                          field=dotted_path(path) or None)

    def value(self, node: yaml.Node, path: tuple, depth: int = 0) -> Any:
        self._count += 1
        if self._count > self.MAX_NODES:
            raise self._error("the YAML document is too large (too many values or aliases)", node, path)
        if depth > self.MAX_DEPTH:
            raise self._error("the YAML document is nested too deeply", node, path)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            raise self._error("recursive YAML alias", node, path)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                out: dict[str, Any] = {}
                first: dict[str, int] = {}
                for knode, vnode in node.value:
                    if knode.tag == "tag:yaml.org,2002:merge":
                        raise self._error("YAML merge keys ('<<') are not supported", knode, path)
                    if not isinstance(knode, yaml.ScalarNode):
                        raise self._error("keys must be plain names, not lists or mappings", knode, path)
                    key = knode.value
                    line = knode.start_mark.line + 1
                    if key in out:
                        raise self._error(f"duplicate key {key!r} (first given on line {first[key]})",
                                          knode, path + (key,))
                    first[key] = line
                    self.lines[path + (key,)] = line
                    self.nodes[path + (key,)] = vnode
                    out[key] = self.value(vnode, path + (key,), depth + 1)
                return out
            items = []
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                self.nodes[path + (i,)] = item
                items.append(self.value(item, path + (i,), depth + 1))
            return items
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: tuple) -> Any:
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # keep dates as written (e.g. job names)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self._error(f"invalid value: {exc.problem or exc}", node, path) from None
        except Exception as exc:  # noqa: BLE001 - any constructor failure is bad input
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self._error(f"invalid value {show_value(node.value)} ({reason[:80]})", node, path) from None


def load_yaml(text: str, file: str) -> tuple[dict, dict[tuple, int], dict[tuple, yaml.Node]]:
    """Parse a job file's text: (data, key path -> 1-based line, key path -> YAML node).

    Key paths are tuples like ``("scf", "conv_tol")`` or ``("scan", "points", 2)``;
    errors are InputError with `file` and the line.
    """
    loader = None
    try:
        try:
            # the reader checks the characters already here (a NUL byte is refused)
            loader = yaml.SafeLoader(text)
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            parts = [p for p in (exc.context, exc.problem) if p]
            raise InputError("invalid YAML: " + ("; ".join(parts) or str(exc).splitlines()[0]),
                             file=file, line=mark.line + 1 if mark else None) from None
        except yaml.reader.ReaderError as exc:
            line = text[:exc.position].count("\n") + 1 if isinstance(exc.position, int) else None
            char = exc.character
            code = ord(char) if isinstance(char, str) and len(char) == 1 else char
            shown = f"U+{code:04X}" if isinstance(code, int) else repr(code)
            raise InputError(f"invalid YAML: {exc.reason} (character {shown})",
                             file=file, line=line) from None
        except yaml.YAMLError as exc:
            raise InputError(f"invalid YAML: {exc}", file=file) from None
        except RecursionError:
            raise InputError("invalid YAML: nested too deeply", file=file) from None
        if root is None:
            raise InputError("the file is empty (expected a YAML mapping with at least a 'molecule' section)",
                             file=file)
        if not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else f"the value {show_value(root.value)}"
            raise InputError(f"expected a mapping of sections (job, molecule, basis, ...) at the top level, "
                             f"found {kind}", file=file, line=root.start_mark.line + 1)
        walker = _Walker(loader, file)
        walker.lines[()] = root.start_mark.line + 1
        data = walker.value(root, ())
        return data, walker.lines, walker.nodes
    finally:
        if loader is not None:
            loader.dispose()
