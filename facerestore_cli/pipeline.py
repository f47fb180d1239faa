"""The 0.1 API (``Pipeline``, flat ``RestoreOptions``), kept as thin wrappers for one release.

New code uses :class:`facerestore_cli.FaceRestorer` (a photo in memory), :class:`facerestore_cli.AlbumRunner`
(files) and the grouped :class:`facerestore_cli.RestoreOptions`. Everything here forwards to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facerestore_cli.album import InputItem, OutputPlan
from facerestore_cli.defaults import DEFAULT_METHOD
from facerestore_cli.engine import STAGES, FaceRestorer, PhotoResult, StageTimer
from facerestore_cli.options import RestoreOptions as GroupedOptions
from facerestore_cli.report import ImageReport, ReportWriter, Summary
from facerestore_cli.runner import AlbumRunner, restore_file

__all__ = ["STAGES", "Pipeline", "RestoreOptions", "restore_file"]


def RestoreOptions(method: str = DEFAULT_METHOD, weights: Path | None = None, **flags: Any) -> GroupedOptions:
    """The 0.1 flat options (flag names as keywords): :meth:`facerestore_cli.RestoreOptions.from_flat`."""
    return GroupedOptions.from_flat(method, weights, **flags)


class Pipeline:
    """The 0.1 album object: a :class:`FaceRestorer` and an :class:`AlbumRunner` under one name."""

    def __init__(self, options: GroupedOptions | None = None, *, restorer: Any = None, detector: Any = None,
                 on_message: Any = None) -> None:  # fmt: skip
        self.engine = FaceRestorer(options, restorer=restorer, detector=detector, on_message=on_message, prepare=False)
        self.runner = AlbumRunner(self.engine)
        self.options = self.engine.options
        self._prepared = False

    def __getattr__(self, name: str) -> Any:  # runtime, restorer, detector, embedder, compile_person, ...
        if name in ("engine", "runner", "_prepared"):
            raise AttributeError(name)
        return getattr(self.engine, name)

    def prepare(self) -> None:
        """Build the detector and compile the references (``FaceRestorer`` does it at construction)."""
        if not self._prepared:
            self.engine._prepare()
            self._prepared = True

    def restore_photo(self, photo: Any, timer: StageTimer | None = None) -> PhotoResult:
        self.prepare()  # 0.1 silently dropped the references when prepare() was forgotten
        return self.engine.restore(photo, timer)

    def process(self, item: InputItem, output: Path, photo: Any = None) -> ImageReport:
        self.prepare()
        return self.runner.process(item, output, photo)

    def run(self, items: list[InputItem], plan: OutputPlan, *, report: ReportWriter | None = None,
            on_image: Any = None, summary: Summary | None = None) -> Summary:  # fmt: skip
        self.prepare()
        return self.runner.run(items, plan, report=report, on_image=on_image, summary=summary)
