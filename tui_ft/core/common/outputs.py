"""The one rule for every file a command writes where the user says (``export OUT``, ``predict --out``).

Such a file is written atomically (a temp file renamed over the path), so whatever
the path named before is replaced. :func:`check_output_path` refuses, before
anything is computed:

* a path inside ``logs/`` or ``checkpoints/`` of the project root (the run folders
  and the checkpoint library tui-ft manages: a ``best.pt`` replaced by an export or
  a ``last.pt`` by a CSV is a run lost), whatever ``force`` says;
* a path that is one of the command's inputs (the checkpoint being read, a data
  file) or lies inside an input folder (``predict DIR --out DIR/id_prop.csv``),
  the same file reached by another name (a hard link) included, whatever ``force`` says;
* an existing entry that is not a regular file: a folder, a symbolic link, a FIFO,
  a device, a socket (renaming over ``/dev/stdout`` would replace the device entry
  with a regular file), whatever ``force`` says;
* a path whose parent exists but is not a folder;
* an existing regular file, unless ``force`` (the commands' ``--force``).

The error is :class:`OutputPathError`, one line naming the path and the rule.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from tui_ft.core.common.files import entry_kind
from tui_ft.core.common.paths import Paths

__all__ = ["OutputPathError", "check_output_path"]


class OutputPathError(ValueError):
    """An output path the rule refuses; ``str(exc)`` is one line."""


def _resolved(p: Path) -> Path:
    """``p`` with its folders' symlinks and ``..`` resolved (its last component kept as written)."""
    return p.parent.resolve() / p.name if p.name not in ("", ".", "..") else p.resolve()


def _within(p: Path, folder: Path) -> bool:
    return p == folder or folder in p.parents


def check_output_path(
    path: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    paths: Paths | None = None,
    force: bool = False,
    what: str = "output",
    example: str = "out.csv",
) -> Path:
    """``path`` as a :class:`Path` when a command may write it; else :class:`OutputPathError`.

    ``inputs``: what the command reads (checkpoint files, data files or folders;
    names that are not paths, such as ``demo``, are ignored). ``paths``: the project
    whose ``logs/`` and ``checkpoints/`` are off limits (default: the current one).
    ``what`` names the path in the message (``--out``, ``OUT``); ``example`` is a
    file name offered when ``path`` is a folder. See the module docstring for the rule."""
    raw = os.fspath(path)
    if not raw.strip():
        raise OutputPathError(f"{what}: expected a file name, got an empty path")
    p = Path(raw).expanduser()

    def refuse(why: str) -> OutputPathError:
        return OutputPathError(f"{what} {raw}: {why}")

    try:
        st: os.stat_result | None = os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):  # a folder above it that is a file: said below
        st = None
    except OSError as exc:
        raise refuse(f"cannot check it ({exc.strerror or exc})") from None
    if st is not None:
        kind = entry_kind(st.st_mode)
        if kind == "a folder":
            raise refuse(f"is a folder; give a file name such as {p / example}")
        if kind is not None:
            hint = "; leave out --out to write to stdout" if what == "--out" and raw.startswith("/dev/") else ""
            raise refuse(f"is {kind}, not a regular file; refusing to replace it{hint}")
    target = _resolved(p)
    paths = paths or Paths.default()
    for folder, name in ((paths.checkpoints, "checkpoints/"), (paths.logs, "logs/")):
        if _within(target, folder.resolve()):
            raise refuse(f"is inside {name} of the project ({folder}), which tui-ft manages; write it elsewhere")
    for item in inputs:
        ip = Path(os.fspath(item)).expanduser()
        try:
            ist = ip.stat()
        except (OSError, ValueError):
            continue  # a named source (demo, matbench_...) or a missing file the reader reports
        ires = ip.resolve()
        same = target == ires or (st is not None and (st.st_dev, st.st_ino) == (ist.st_dev, ist.st_ino))
        if same:
            raise refuse(f"is an input of this command ({item}); write the output to another file")
        if stat.S_ISDIR(ist.st_mode) and _within(target, ires):
            raise refuse(f"is inside the input folder {item}; write the output elsewhere")
    for parent in p.parents:  # the nearest existing folder above it must be a folder (the rest is created)
        try:
            pst = parent.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise refuse(f"its folder {parent} cannot be checked ({exc.strerror or exc})") from None
        if not stat.S_ISDIR(pst.st_mode):
            raise refuse(f"{parent} is not a folder")
        break
    if st is not None and not force:
        raise refuse("exists; pass --force to replace it")
    return p
