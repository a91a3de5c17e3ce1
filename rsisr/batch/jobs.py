"""The jobs of a batch (input and output paths) and its report."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rsisr.atomic import write_text
from rsisr.errors import InputError, OutputError

#: Scenes of an input folder that ``rsisr batch`` takes unless told otherwise (``--pattern``).
DEFAULT_PATTERN = "*.tif"


@dataclass
class SceneResult:
    """What happened to one scene: ``status`` is done, skipped or failed; ``reason`` says why an
    existing output was redone (made with other settings, unreadable, ``--overwrite``)."""

    input: str
    output: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    reason: str | None = None


@dataclass
class BatchReport:
    scenes: list[SceneResult] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0

    @property
    def counts(self) -> dict[str, int]:
        out = {"done": 0, "skipped": 0, "failed": 0}
        for s in self.scenes:
            out[s.status] += 1
        return out

    @property
    def failed(self) -> list[SceneResult]:
        return [s for s in self.scenes if s.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"scenes": [asdict(s) for s in self.scenes], "summary": {**self.counts, "seconds": self.seconds,
                                                                        "workers": self.workers}}

    def write_json(self, path: str | os.PathLike) -> None:
        """Write the report atomically (a failed write is a one-line OutputError)."""
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", "report")


def plan_jobs(input_dir: str | os.PathLike, output_dir: str | os.PathLike, pattern: str = "*.tif",
              recursive: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) pairs; output paths mirror the input's relative paths under ``output_dir``.

    Rejected before any work: a missing input folder, ``output_dir`` inside ``input_dir`` (a
    rerun would pick up its own outputs) and two inputs that map to one output.
    """
    src_root = Path(input_dir)
    if not src_root.is_dir():
        raise InputError(f"input folder {str(src_root)!r} does not exist or is not a folder")
    dst_root = Path(output_dir)
    src_abs, dst_abs = src_root.resolve(), dst_root.resolve()
    if dst_abs == src_abs or src_abs in dst_abs.parents:
        raise OutputError(
            f"output folder {str(dst_root)!r} is inside the input folder {str(src_root)!r}; choose an output folder "
            "outside it"
        )
    found = src_root.rglob(pattern) if recursive else src_root.glob(pattern)
    inputs = sorted(p for p in found if p.is_file())
    if not inputs:
        how = "recursively " if recursive else ""
        raise InputError(f"no file in {str(src_root)!r} matches {pattern!r} {how}(use --pattern or --recursive)")
    jobs: list[tuple[Path, Path]] = []
    seen: dict[str, Path] = {}
    for p in inputs:
        rel = p.relative_to(src_root)
        out = dst_root / rel.with_suffix(".tif")
        key = os.path.normcase(str(out.resolve())).lower()
        if key in seen:
            raise OutputError(
                f"{str(seen[key])!r} and {str(p)!r} would both be written to {str(out)!r}; rename one of them"
            )
        seen[key] = p
        jobs.append((p, out))
    return jobs


def uncertainty_paths(jobs: list[tuple[Path, Path]], input_dir, output_dir, uncertainty_dir,
                      ensemble: int) -> list[Path] | None:
    """The uncertainty raster of each job under ``uncertainty_dir`` (``--uncertainty DIR``),
    mirroring the outputs' relative paths; None when not asked for. Rejected before any work:
    an ensemble of one, and a folder that is the output folder or inside the input folder."""
    from rsisr.upscale.uncertainty import require_ensemble

    if uncertainty_dir is None:
        return None
    root = Path(uncertainty_dir)
    require_ensemble(f"--uncertainty {str(root)!r}", ensemble)
    if root.resolve() == Path(output_dir).resolve():
        raise OutputError(f"--uncertainty {str(root)!r} is the output folder, whose files are the outputs; choose "
                          "another folder")
    src_abs, root_abs = Path(input_dir).resolve(), root.resolve()
    if root_abs == src_abs or src_abs in root_abs.parents:
        raise OutputError(f"--uncertainty {str(root)!r} is inside the input folder {str(input_dir)!r}; choose a "
                          "folder outside it")
    return [root / dst.relative_to(output_dir) for _, dst in jobs]


def format_table(report: BatchReport) -> str:
    """A plain-text table of the scenes (status, seconds, input, then the error, or why an
    existing output was redone)."""
    rows = [("status", "seconds", "input", "error / reason")]
    for s in report.scenes:
        note = s.error or (f"redone: {s.reason}" if s.reason else "")
        rows.append((s.status, f"{s.seconds:.1f}", s.input, note))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(3)) + ("  " + r[3] if r[3] else "") for r in rows]
    c = report.counts
    lines.append(f"{c['done']} done, {c['skipped']} skipped, {c['failed']} failed in {report.seconds:.1f} s")
    return "\n".join(lines)
