"""Albums with many people: which person's references each face gets.

A people folder holds one folder of reference photos per person (``people/alice/``, ``people/bob/``).
Each person gets a compiled DMDNet dictionary and the centroid of their references' face embeddings
(``identity.py``: dlib's, or insightface's when its model pack is on disk). A face is routed to the
nearest centroid only when it is close enough (``threshold``) *and* clearly closer than to anybody else
(``margin``); otherwise it gets generic restoration, and the report says why. Giving a face somebody
else's references is worse than giving it none, so every doubt falls back to generic. With a single
person (``--refs``) only the threshold applies. Distances only mean something within one embedder:
an index refuses people compiled with another embedder than the faces it routes.

Each embedder carries its own defaults. :data:`DEFAULT_THRESHOLD` and :data:`DEFAULT_MARGIN` are
dlib's, measured on real photos (see below). insightface's (``identity.INSIGHTFACE_THRESHOLD``/``INSIGHTFACE_MARGIN``)
come from insightface's published same-person guidance and were NOT measured this way;
``bench/routing.py --embedder insightface`` runs the same procedure for them.

How the dlib defaults were chosen (``bench/routing.py`` on the London pairs, a grid search that keeps
at most 1% wrong-person matches in every role) is in ``docs/studies/people-routing-defaults.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerestore_cli.face.identity import DLIB_MARGIN, DLIB_THRESHOLD, cosine_similarity
from facerestore_cli.references.dictionary import CompiledDictionary, DictionaryError, reference_files

#: Largest dlib distance between a face and a person's centroid that still counts as that person.
DEFAULT_THRESHOLD = DLIB_THRESHOLD
#: The nearest person must be at least this much closer than the second nearest (dlib distances).
DEFAULT_MARGIN = DLIB_MARGIN


@dataclass
class Person:
    name: str
    folder: Path
    dictionary: CompiledDictionary

    @property
    def centroid(self) -> np.ndarray:
        assert self.dictionary.centroid is not None
        return self.dictionary.centroid


@dataclass
class Route:
    """The routing decision for one face."""

    person: str | None
    distance: float | None
    similarity: float | None
    reason: str
    dictionary: CompiledDictionary | None = None


def person_folders(root: Path, on_warning: Callable[[str], None] | None = None) -> list[Path]:
    """The person sub-folders of a people folder, sorted by name.

    Hidden folders are skipped, and so are symlinks that lead out of the people folder (to ``.``, a
    parent, or elsewhere): a link to ``.`` would make the whole people folder one more "person", and a
    link outside compiles photos nobody put there. Photos at the top level belong to nobody; they are
    left out with a warning, and the person folders are compiled all the same. ``on_warning`` gets
    what was left out (default: nothing is said).
    """
    root = Path(root)
    if not root.is_dir():
        raise DictionaryError(f"--people {root}: not a folder")
    say = on_warning or (lambda _m: None)
    inside = root.resolve()
    folders = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not p.is_dir():
            continue
        if p.is_symlink():
            target = p.resolve()
            if target == inside or inside not in target.parents:
                say(f"skipping {p}: a symlink to {target}, outside the people folder {root}")
                continue
        folders.append(p)
    if not folders:
        raise DictionaryError(f"--people {root}: no person folders inside (expected e.g. {root}/alice/)")
    strays = reference_files(root)
    if strays:
        say(
            f"{root}: {len(strays)} photo(s) at the top level belong to no person and are not used "
            f"(e.g. {strays[0].name}; put them in a person's folder); compiling the person folders"
        )
    return folders


def folders_to_compile(folder: Path, on_warning: Callable[[str], None] | None = None) -> list[Path]:
    """What ``build-dict FOLDER`` compiles: ``folder`` itself when it is a person's, else its people.

    A folder of photos is a person; one of person folders is a people folder, even with a stray photo
    at its top: that photo must not turn it into one person and hide ``alice/`` and ``bob/``. Which it
    is goes by what holds more photos' worth of people: more top-level photos than person folders with
    photos is a person (its sub-folders are named as unused), else a people folder (the stray photos
    are named as unused). Raises ``DictionaryError`` for a folder with neither.
    """
    say = on_warning or (lambda _m: None)
    folder = Path(folder)
    if not folder.is_dir():
        raise DictionaryError(f"{folder} is not a folder")
    warnings: list[str] = []
    try:
        people = person_folders(folder, on_warning=warnings.append)
    except DictionaryError:
        people = []
    photos = reference_files(folder)
    with_photos = [p for p in people if reference_files(p)]
    if photos and len(photos) > len(with_photos):
        if with_photos:
            names = ", ".join(p.name for p in with_photos)
            say(f"{folder}: compiled as one person's folder; its sub-folders {names} are not used (give them to "
                "build-dict themselves)")  # fmt: skip
        return [folder]
    if not people:
        raise DictionaryError(
            f"{folder}: no reference photos in it, and no person folders either (a person's folder holds "
            f"their photos; a people folder holds one folder per person, e.g. {folder / 'alice'})"
        )
    for message in warnings:
        say(message)
    return people


class PeopleIndex:
    """Known people and the rule that assigns faces to them."""

    def __init__(
        self,
        people: list[Person],
        threshold: float = DEFAULT_THRESHOLD,
        margin: float = DEFAULT_MARGIN,
        embedder: str | None = None,
    ):
        """``embedder``: the canonical name of the embedder whose embeddings :meth:`route` will get;
        every person must have been compiled with it (their centroids live in its space)."""
        if not people:
            raise DictionaryError("no people to match faces against")
        if embedder is not None:
            other = [p for p in people if p.dictionary.embedder != embedder]
            if other:
                listed = ", ".join(f"{p.name} ({p.dictionary.embedder or 'unknown embedder'})" for p in other)
                raise DictionaryError(
                    f"faces are embedded with {embedder} but these people were compiled with another embedder: "
                    f"{listed}; compile them again with --embedder {embedder}"
                )
        sizes = {p.centroid.shape for p in people}
        if len(sizes) > 1:
            raise DictionaryError(f"people's centroids have different sizes {sorted(sizes)}: mixed embedders")
        self.people = people
        self.threshold = threshold
        self.margin = margin
        self.embedder = embedder
        self._centroids = np.stack([p.centroid for p in people])

    @classmethod
    def build(
        cls,
        root: Path,
        compile_person: Callable[[Path], CompiledDictionary],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        margin: float = DEFAULT_MARGIN,
        embedder: str | None = None,
        on_error: Callable[[Path, Exception], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> PeopleIndex:
        """Compile (or load from the cache) every person folder under ``root`` (``on_warning``: what
        :func:`person_folders` left out)."""
        people = []
        for folder in person_folders(root, on_warning):
            try:
                people.append(Person(folder.name, folder, compile_person(folder)))
            except DictionaryError as exc:
                if on_error is None:
                    raise
                on_error(folder, exc)
        return cls(people, threshold, margin, embedder)

    def route(self, embedding: np.ndarray) -> Route:
        embedding = np.asarray(embedding, dtype=np.float32).ravel()
        if embedding.shape[0] != self._centroids.shape[1]:
            raise ValueError(
                f"a {embedding.shape[0]}-d embedding cannot be matched with {self._centroids.shape[1]}-d centroids "
                "(another embedder's)"
            )
        d = np.linalg.norm(self._centroids - embedding[None, :], axis=1)
        order = np.argsort(d, kind="stable")  # ties: the first person by name
        best = int(order[0])
        d1 = float(d[best])
        sim = cosine_similarity(embedding, self._centroids[best])
        name = self.people[best].name
        if d1 > self.threshold:
            return Route(None, d1, sim, f"nobody: nearest is {name} at distance {d1:.3f} > {self.threshold}")
        if len(order) > 1:
            d2 = float(d[int(order[1])])
            if d2 - d1 < self.margin:
                second = self.people[int(order[1])].name
                return Route(
                    None, d1, sim,
                    f"ambiguous: {name} at {d1:.3f} and {second} at {d2:.3f} are within the margin {self.margin}",
                )  # fmt: skip
        return Route(name, d1, sim, f"matched {name} at distance {d1:.3f}", self.people[best].dictionary)
