"""Albums with many people: which person's references each face gets.

A people folder holds one folder of reference photos per person (``people/alice/``, ``people/bob/``).
Each person gets a compiled DMDNet dictionary and the centroid of their references' dlib embeddings.
A face is routed to the nearest centroid only when it is close enough (``threshold``) *and* clearly
closer than to anybody else (``margin``); otherwise it gets generic restoration, and the report says
why. Giving a face somebody else's references is worse than giving it none, so every doubt falls
back to generic.

The defaults come from ``bench/routing.py`` on the London pairs: see the README for the measured
genuine and impostor distances and how the threshold was chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facerestore_cli.dictionary import CompiledDictionary, DictionaryError

#: Largest dlib distance between a face and a person's centroid that still counts as that person.
DEFAULT_THRESHOLD = 0.55
#: The nearest person must be at least this much closer than the second nearest.
DEFAULT_MARGIN = 0.06


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


def person_folders(root: Path) -> list[Path]:
    """The person sub-folders of a people folder (hidden ones skipped), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DictionaryError(f"--people {root}: not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DictionaryError(f"--people {root}: no person folders inside (expected e.g. {root}/alice/)")
    return folders


class PeopleIndex:
    """Known people and the rule that assigns faces to them."""

    def __init__(self, people: list[Person], threshold: float = DEFAULT_THRESHOLD, margin: float = DEFAULT_MARGIN):
        if not people:
            raise DictionaryError("no people to match faces against")
        self.people = people
        self.threshold = threshold
        self.margin = margin
        self._centroids = np.stack([p.centroid for p in people])

    @classmethod
    def build(
        cls,
        root: Path,
        compile_person: Callable[[Path], CompiledDictionary],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        margin: float = DEFAULT_MARGIN,
        on_error: Callable[[Path, Exception], None] | None = None,
    ) -> PeopleIndex:
        """Compile (or load from the cache) every person folder under ``root``."""
        people = []
        for folder in person_folders(root):
            try:
                people.append(Person(folder.name, folder, compile_person(folder)))
            except DictionaryError as exc:
                if on_error is None:
                    raise
                on_error(folder, exc)
        return cls(people, threshold, margin)

    def route(self, embedding: np.ndarray) -> Route:
        d = np.linalg.norm(self._centroids - embedding[None, :], axis=1)
        order = np.argsort(d)
        best = int(order[0])
        d1 = float(d[best])
        sim = _cosine(embedding, self._centroids[best])
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


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
