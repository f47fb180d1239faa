"""Finding the photos to restore and deciding where each result goes.

Inputs are files, folders (recursed with ``recursive``) and glob patterns. Outputs mirror the input
tree under ``-o DIR`` and keep file names and formats; without ``-o`` they go next to the input with a
suffix. An output path can never escape the output folder, never lands on an input (unless the user
asked for ``--in-place``) and two inputs can never write the same output.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from facerestore_cli.imagefile import SUPPORTED_SUFFIXES

__all__ = [
    "InputItem",
    "InputProblem",
    "Inputs",
    "OutputError",
    "OutputPlan",
    "check_output_folder",
    "check_side_file",
    "discover_inputs",
    "names_an_album",
]


GLOB_CHARS = frozenset("*?[")
#: Photo suffixes this installation cannot read without an optional package (HEIC/HEIF: pillow-heif).
OPTIONAL_SUFFIXES = frozenset({".heic", ".heif"}) - SUPPORTED_SUFFIXES
HEIF_HINT = 'install HEIF support with: pip install "facerestore-cli[heif]"'


@dataclass(frozen=True)
class InputItem:
    """One photo to process: its path and where it sits relative to the folder it was found in."""

    path: Path
    relative: Path

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class InputProblem:
    """An input that could not be listed (missing, unreadable folder, glob without matches), or a photo
    found but left out (``status`` ``skipped``: a HEIC photo without pillow-heif)."""

    spec: str
    reason: str
    message: str
    #: the report status it gets: ``failed``, or ``skipped`` (not done either: the exit code is 1)
    status: str = "failed"


def _needs_package(path: Path) -> InputProblem:
    """A photo of a format an optional package reads: listed as skipped, with what to install."""
    return InputProblem(
        str(path), "needs-pillow-heif", f"{path}: HEIC/HEIF photos need the pillow-heif package; {HEIF_HINT}", "skipped"
    )


@dataclass
class Inputs:
    items: list[InputItem] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: Path, recursive: bool, exclude: Path | None, problems: list[InputProblem]) -> list[Path]:
    found: list[Path] = []
    stack = [root]
    visited: set[tuple[int, int]] = set()  # (device, inode): a symlink back up the tree is walked once
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in visited:
                continue
            visited.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as entries:
                entries = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            problems.append(
                InputProblem(str(folder), "unreadable", f"cannot read folder {folder}: {exc.strerror or exc}")
            )
            continue
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir():
                    if recursive and (exclude is None or not _same_or_inside(path, exclude)):
                        stack.append(path)
                elif entry.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES:
                    found.append(path)
                elif entry.is_file() and path.suffix.lower() in OPTIONAL_SUFFIXES:
                    problems.append(_needs_package(path))  # never silently left out
            except OSError as exc:
                problems.append(InputProblem(str(path), "unreadable", f"cannot read {path}: {exc.strerror or exc}"))
    return sorted(found)


def _same_or_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _strictly_inside(path: Path, folder: Path) -> bool:
    return _same_or_inside(path, folder) and path.resolve() != folder.resolve()


def _exclusion(exclude: Path | None, root: Path) -> Path | None:
    """The folder to leave out of ``root``'s listing: ``exclude`` only when it is strictly inside ``root``.

    ``-o`` may be the input folder itself (with ``--suffix``) or one of its parents; excluding it then
    would exclude every photo, so only an output folder nested in the input tree is left out.
    """
    return exclude if exclude is not None and _strictly_inside(exclude, root) else None


def _glob_root(pattern: str) -> Path:
    """The folder part of a pattern before its first wildcard (what outputs are mirrored from)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def discover_inputs(specs: list[str], *, recursive: bool = False, exclude: Path | None = None) -> Inputs:
    """Expand files, folders and globs into a sorted, de-duplicated list of photos.

    ``exclude`` is a folder never to descend into nor take glob matches from (the output folder, so
    that an album restored into a sub-folder of itself is not restored again on the next run).
    Explicitly named files are taken whatever their extension, so an unsupported one is reported
    rather than silently skipped; inside folders only known photo suffixes are listed.
    """
    out = Inputs()
    seen: set[Path] = set()

    def add(path: Path, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.items.append(InputItem(path=path, relative=relative))

    for spec in specs:
        path = Path(spec)
        if GLOB_CHARS & set(spec) and not path.exists():
            root = _glob_root(spec)
            skip = _exclusion(exclude, root)
            # shortest path first, so a file reached again through a symlink keeps its plain name
            matches = sorted((Path(m) for m in glob.glob(spec, recursive=recursive)), key=lambda m: (len(m.parts), m))
            shortest: dict[Path, Path] = {}
            unreadable: dict[Path, Path] = {}
            for m in matches:
                if m.is_file() and m.suffix.lower() in SUPPORTED_SUFFIXES:
                    shortest.setdefault(m.resolve(), m)
                elif m.is_file() and m.suffix.lower() in OPTIONAL_SUFFIXES:
                    unreadable.setdefault(m.resolve(), m)
            files = sorted(m for m in shortest.values() if not (skip is not None and _same_or_inside(m, skip)))
            out.problems.extend(_needs_package(m) for m in sorted(unreadable.values()))
            if not files and not unreadable:
                out.problems.append(InputProblem(spec, "no-match", f"no photos match {spec}"))
            for f in files:
                add(f, _relative(f, root))
        elif path.is_dir():
            for f in _walk(path, recursive, _exclusion(exclude, path), out.problems):
                add(f, f.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif path.exists():
            out.problems.append(InputProblem(spec, "unsupported", f"{spec} is not a regular file or folder"))
        else:
            out.problems.append(InputProblem(spec, "missing", f"{spec} does not exist"))
    return out


#: Leading bytes of the image formats a user may keep (more than we read: GIF, HEIF, raw TIFFs...).
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"II*\x00", b"MM\x00*", b"BM", b"RIFF")
_IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".gif", ".avif", ".dng"}
)


def _looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_IMAGE_MAGIC) or head[4:8] == b"ftyp"


def check_side_file(path: Path, items: list[InputItem], option: str) -> None:
    """Refuse a file the run would write beside its photos (``--report``) where it would destroy one.

    A forgotten value makes the shell hand the next word to the option: ``--report *.jpg`` would
    truncate the first photo into JSON. So the path may be neither an input nor any existing image
    file, nor a folder. Raises ``ValueError`` (a usage error, before any work).
    """
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a file name, e.g. {path / 'report.jsonl'}")
    target = path.resolve()
    if any(item.path.resolve() == target for item in items):
        raise ValueError(f"{option} {path}: that is one of the photos to restore; give the {option} file a name")
    if path.exists() and _looks_like_image(path):
        raise ValueError(f"{option} {path}: refusing to overwrite an image file (did you forget the file name?)")


def check_output_folder(folder: Path) -> None:
    """Refuse an ``-o`` folder that cannot be written, before any photo is restored.

    Without this check a typo or a read-only mount is found only when the first result is saved, after
    the models loaded and the first photo was restored, and then once per photo. The folder itself is
    not created here (a refused run leaves nothing behind): the nearest existing folder on its path is
    probed with a real temporary file, which also catches read-only mounts that permission bits miss.
    Raises ``ValueError`` (a usage error, exit 2).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"-o {folder}: is a file, not a folder")
    probe_in = folder
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise ValueError(f"-o {folder}: {probe_in} is a file, so the folder cannot be created")
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".facerestore-write-test-", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if probe_in == folder:
            raise ValueError(f"-o {folder}: cannot write into it ({why})") from None
        raise ValueError(f"-o {folder}: cannot create it (cannot write into {probe_in}: {why})") from None


def names_an_album(word: str, rest: list[str], own: set[str], subcommands: Collection[str] | None) -> bool | None:
    """Whether ``facerestore WORD REST...`` names the album folder ``./WORD`` rather than the command WORD.

    It does (True) when that folder exists and nothing after it belongs to the command (``own``: its
    option names; ``subcommands``: a group's): no words at all, a group's first word that is not one of
    its subcommands (``facerestore train -r -o out``), or only options the command does not have
    (``facerestore people -o out``); ``facerestore people ./people/`` stays the command (False). None:
    the command, although what follows is not its own (the caller says to write ``./WORD``).
    """
    words = [w.split("=", 1)[0] for w in rest if w.startswith("-")]
    if subcommands is not None:
        foreign = bool(rest) and rest[0] not in subcommands and rest[0] not in own
    else:
        foreign = bool(words) and not any(w in own for w in words)
    if not Path(word).is_dir():
        return None if foreign else False
    return not rest or foreign


def _relative(path: Path, root: Path) -> Path:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return Path(path.name)
    return Path(path.name) if ".." in rel.parts else rel


class OutputError(ValueError):
    """This input cannot be given an output (it would overwrite an input, collide or escape)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class OutputPlan:
    """Where results go.

    ``out_dir`` mirrors the input tree; without it results go next to their input. ``suffix`` is
    inserted before the extension (default ``_restored`` next to inputs, nothing under ``out_dir``);
    ``ext`` changes the format; ``in_place`` replaces the input itself (atomically).
    """

    out_dir: Path | None = None
    suffix: str | None = None
    ext: str | None = None
    in_place: bool = False
    _claimed: dict[Path, Path] = field(default_factory=dict, repr=False)
    _inputs: set[Path] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if self.ext is not None:
            self.ext = self.ext if self.ext.startswith(".") else "." + self.ext
            if self.ext.lower() not in SUPPORTED_SUFFIXES:
                raise ValueError(
                    f"--ext {self.ext}: not a format we can write ({', '.join(sorted(SUPPORTED_SUFFIXES))})"
                )
        if self.suffix and (os.sep in self.suffix or "/" in self.suffix or ".." in self.suffix):
            raise ValueError("--suffix must not contain path separators or '..'")
        if self.in_place and (self.out_dir is not None or self.suffix or self.ext):
            raise ValueError("--in-place cannot be combined with -o, --suffix or --ext")

    def register_inputs(self, items: list[InputItem]) -> None:
        self._inputs = {i.path.resolve() for i in items}

    @property
    def effective_suffix(self) -> str:
        return self.suffix if self.suffix is not None else ("" if self.out_dir is not None else "_restored")

    def _name(self, item: InputItem) -> str:
        rel = item.relative
        return rel.stem + self.effective_suffix + (self.ext or rel.suffix)

    def drop_previous_outputs(self, items: list[InputItem]) -> tuple[list[InputItem], list[InputItem]]:
        """Results that sit among the inputs (no ``-o``, or ``-o`` the input folder with ``--suffix``):
        a second run over the same folder would find ``photo_restored.jpg`` beside ``photo.jpg`` and
        restore it again. Inputs that are exactly the output another input of this run would write are
        left out (returned second)."""
        if self.in_place or (not self.effective_suffix and self.ext is None):
            return items, []
        outputs = {self._target(item).resolve() for item in items}
        kept = [i for i in items if i.path.resolve() not in outputs]
        dropped = [i for i in items if i.path.resolve() in outputs]
        return kept, dropped

    def _target(self, item: InputItem) -> Path:
        if self.out_dir is not None:
            return self.out_dir / item.relative.parent / self._name(item)
        return item.path.with_name(self._name(item))

    def output_for(self, item: InputItem) -> Path:
        """The output path of ``item``; raises :class:`OutputError` when it would be unsafe."""
        if self.in_place:
            return item.path
        target = self._target(item)
        if self.out_dir is not None:
            root = os.path.abspath(self.out_dir)
            if os.path.commonpath([root, os.path.abspath(target)]) != root:
                raise OutputError("unsafe-path", f"{item.path}: output {target} would escape {self.out_dir}")
        key = target.resolve()
        if key in self._inputs:
            raise OutputError(
                "would-overwrite-input",
                f"{item.path}: the output {target} is an input; use --suffix, another -o folder or --in-place",
            )
        other = self._claimed.get(key)
        if other is not None and other != item.path:
            raise OutputError("output-collision", f"{item.path}: output {target} is already the output of {other}")
        self._claimed[key] = item.path
        return target
