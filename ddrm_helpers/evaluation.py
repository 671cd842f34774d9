"""`evaluate`: a config on a whole data set, resumable, in one process or many (``torchrun``).

>>> evaluation = evaluate("imagenet_256", "imagenet_val_1k.txt", task="sr4", sigma_y=0.05,
...                       root="/data/imagenet/val", out_dir="eval/imagenet_sr4_0.05")
>>> print(evaluation)                      # the table: mean and 95% interval per metric, the paper's

    python -m ddrm_helpers eval --config imagenet_256 --data imagenet_val_1k.txt --root /data/imagenet/val \\
        --task sr4 --sigma-y 0.05 --out eval/imagenet_sr4_0.05
    torchrun --nproc_per_node=8 -m ddrm_helpers eval ...      # the same, on 8 GPUs

Each image of the data set (:mod:`ddrm_helpers.datasets`) is prepared the reference's way (its
centred square, resized to the model's size), degraded (``y = H x`` plus noise), restored by the
engine (:func:`ddrm_helpers.engine.restore`) with the settings of the paper unless told otherwise
(the config's: 20 steps, eta 0.85, eta_b 1), and measured: PSNR and SSIM against the original (of
the restoration and of the degraded image), and the consistency ``||H x_hat - y||`` ([0, 1] pixel
units) and ``||H x_hat - y|| / ||y||``. Its record (those, its index, name, file, seed, class and
seconds) is appended to the rank's ``records/rank-<r>.jsonl`` and flushed to the disk, after the
restoration is saved as ``restored/<index>.png`` (the folder and its rules:
:mod:`ddrm_helpers.runfolder`, :mod:`ddrm_helpers.outdir`).

Before anything is downloaded or loaded, the output folder is looked at (other settings, another
data set, another evaluation running there, a link where a file goes: one line, nothing written)
and every image left to do is opened and decoded (:func:`~ddrm_helpers.datasets.check_images`):
one that cannot be (not an image, truncated, too large, a pipe) is said in one line, recorded with
its error instead of figures, and counted in the summary, and the others are evaluated. Nothing is
written into the folder when the run is refused or its config skipped.

Seeds: image ``i`` is restored with a generator of its own, seeded from
``numpy.random.SeedSequence([seed, i])``, so its result is the same whichever process restores it,
in whatever order: one process or eight give the same records, image by image.

Resuming: ``out_dir`` keeps the settings (``run.json``). Run the same command again after a crash,
a kill or a full disk and the images that have a record are not computed again; other settings
into the same folder are refused. Records are matched to the data set by the images' names, so a
larger ``limit`` extends an evaluation. A record line that is not a record is set aside
(:mod:`ddrm_helpers.records`) and its image computed again.

Many processes: under ``torchrun`` (``WORLD_SIZE`` > 1) the processes join a ``torch.distributed``
group (NCCL on GPUs, gloo on CPUs), each on its own GPU (``LOCAL_RANK``) with its own copy of the
networks; rank 0 checks the folder and the images and fetches the checkpoints first, the images left are dealt out
over the ranks, and rank 0 merges the records (``records.jsonl``) and writes the summary
(``summary.md``, ``summary.csv``, ``summary.json``; :mod:`ddrm_helpers.summary`). Rank 0 holds the
folder's lock for the whole job (:mod:`ddrm_helpers.ranks`).

KID and FID: :mod:`ddrm_helpers.distribution`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import engine, threads, validate
from .config import load_config
from .datasets import DataSet, check_images, open_data
from .degradations import make_degradation
from .distribution import distribution_metrics
from .engine import Inputs, Skipped, resolve_settings
from .errors import ArgumentError, ImageError
from .images import load_image
from .metrics import psnr, ssim
from .ranks import Ranks
from .results import safe_name
from .runfolder import RunFolder, begin, error_record, survey
from .store import CheckpointStore
from .summary import markdown, summarize

SAID_MAX = 20  # images that cannot be read, said one line each; the rest in one line (their records say why)


@dataclass
class Evaluation:
    """An evaluation's summary (:func:`ddrm_helpers.summary.summarize`), its records (one per image,
    by index) and the files it wrote. The same on every rank."""

    summary: dict
    records: list[dict]
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    skipped: bool = False

    @property
    def finite(self) -> bool:
        """False when a restoration holds NaN or infinity."""
        return self.summary["not_finite"] == 0

    @property
    def complete(self) -> bool:
        """False when some image could not be read (its record says why)."""
        return self.summary["unreadable"] == 0

    def __str__(self) -> str:
        return markdown(self.summary) + f"Records and summary in {self.out_dir}"


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index``'s generator: from ``SeedSequence([seed, index])``, 32 bits
    (what every PyTorch generator keeps; :data:`ddrm_helpers.validate.SEED_MAX`)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0])


def evaluate(
    config_name: str,
    data,
    task: str | None = None,
    sigma_y: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    *,
    out_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    limit: int | None = None,
    eta: float | None = None,
    eta_b: float | None = None,
    classifier_scale: float | None = None,
    features="inception",
    inception_weights: str | os.PathLike | None = None,
    store: CheckpointStore | None = None,
    device: str | torch.device | None = None,
    download: bool | None = None,
    progress: bool = True,
) -> Evaluation | Skipped:
    """Evaluate config ``config_name`` on ``data``; see the module docstring.

    ``data``: a folder of images, a folder of class subfolders, a list file (paths relative to
    ``root``, default the list's folder) or a torchvision ``ImageFolder``; ``limit``: its first
    ``limit`` images. ``task``, ``sigma_y`` ([0, 1] pixel units), ``steps``, ``eta``, ``eta_b`` and
    ``classifier_scale`` default to the config's (the paper's). ``out_dir``: the evaluation's
    folder, made if needed, resumed if it holds one. ``features``: ``"inception"``, a network
    (``uint8`` ``[N, 3, H, W]`` -> ``[N, D]``) or None (no KID / FID); ``inception_weights``: a local
    copy of torch-fidelity's Inception weights (else it fetches them). ``device``: default cuda
    (``cuda:LOCAL_RANK`` under torchrun) when a GPU is visible, else cpu. ``store``, ``download``:
    as for :func:`~ddrm_helpers.runner.run_config`.

    Returns an :class:`Evaluation` (also printed by rank 0), or the :class:`Skipped` of a config
    whose checkpoints cannot be had (nothing written). Bad arguments, and an output folder that
    cannot be used as it is (:class:`~ddrm_helpers.errors.OutDirError`), raise ``ValueError``
    before anything is loaded or written; a write that fails (a full disk) raises
    :class:`~ddrm_helpers.errors.OutDirWriteError`, and the same call again resumes.
    """
    config = load_config(config_name)
    local_rank, world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    where = validate.check_device(device) or engine.default_device()
    if where.type == "cuda" and where.index is None and world > 1:
        where = validate.check_device(torch.device("cuda", local_rank), "LOCAL_RANK's GPU")  # each rank on its own
    settings = resolve_settings(config, task, sigma_y, steps, eta, eta_b, seed, 1, classifier_scale=classifier_scale,
                                batch_size=1, device=where, out_dir=out_dir, save=True)
    if limit is not None:
        limit = validate.check_count(limit, "limit", "how many images of the data set to evaluate, 1 or more")
    data_set = open_data(data, root, limit)
    size = int(config.data.image_size)
    degradation = make_degradation(settings.task, size)  # an unknown task fails here, before any download
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise FileNotFoundError(f"inception_weights: no file at {inception_weights}")
    if not (features is None or features == "inception" or isinstance(features, torch.nn.Module)):
        raise ArgumentError(f"features is 'inception', a torch.nn.Module or None; got {features!r}")
    run = {"config": config.name, "display": config.display, "task": settings.task, "sigma_y": settings.sigma_y,
           "steps": settings.steps, "eta": settings.eta, "eta_b": settings.eta_b, "seed": settings.seed,
           "classifier_scale": settings.classifier_scale if "classifier" in config.checkpoints else None,
           "image_size": size, "data": data_set.description}
    count = threads.for_evaluation(settings.device)  # the same in every rank and in one process: docs/evaluation.md
    ranks = Ranks.join(settings.device)
    folder = Path(out_dir).expanduser()
    run_folder = None
    before = threads.set_count(count)
    try:
        done = ranks.on_zero(lambda: survey(folder, run, data_set).done)
        todo = [i for i in range(len(data_set)) if i not in done]
        checked = ranks.gather(check_images(data_set, todo[ranks.rank::ranks.world]))  # each rank its share
        problems = ranks.on_zero(lambda: _say_problems(data_set, todo, done, checked, size))
        networks = None

        def load_first():  # rank 0 fetches what is missing; the others then find it verified
            nonlocal networks
            networks = engine.load_networks(config, store, device=settings.device, download=download,
                                            progress=progress)
            return networks if isinstance(networks, Skipped) else None

        skipped = ranks.on_zero(load_first)
        if skipped is not None:
            if ranks.rank == 0:
                print(skipped, flush=True)
            return skipped
        if ranks.rank != 0:
            networks = engine.load_networks(config, store, device=settings.device, download=download, progress=False)
            if isinstance(networks, Skipped):
                raise RuntimeError(f"rank {ranks.rank}: {networks}")

        def take():  # rank 0: the lock, the settings, the errors of the images that cannot be read
            nonlocal run_folder
            run_folder, found = begin(folder, run, data_set, problems)
            done = found.done  # (it may hold images beyond this run's --limit: those of a larger one)
            remaining = [i for i in range(len(data_set)) if i not in done and i not in problems]
            return remaining, sum(1 for i in range(len(data_set)) if i in done)

        remaining, resumed = ranks.on_zero(take)
        if ranks.rank != 0:
            run_folder = RunFolder.join(folder, ranks.rank)
        if ranks.rank == 0 and resumed:
            print(f"Resuming {folder}: {resumed} of {len(data_set)} images already have a record.", flush=True)
        conditional = "classifier" in config.checkpoints
        if ranks.rank == 0 and conditional and not data_set.imagenet_labels:
            print(f"{data_set.description} has no ImageNet classes: each image gets the classifier's best guess "
                  "(its record says class_guessed).", flush=True)
        _restore_all(config, networks, settings, data_set, remaining[ranks.rank::ranks.world], degradation,
                     run_folder, ranks, conditional, progress)
        ranks.barrier()
        evaluated = ranks.on_zero(lambda: sorted(i for i in run_folder.read_all().done if i < len(data_set)))
        distribution = distribution_metrics(data_set, evaluated, size, run_folder, features, inception_weights, ranks,
                                            settings.device, settings.seed)
        evaluation = ranks.on_zero(lambda: _finish(run_folder, run, data_set, distribution, str(settings.device)))
        if ranks.rank == 0:
            print(evaluation, flush=True)
        return evaluation
    finally:
        if run_folder is not None:
            run_folder.close()
        ranks.close()
        threads.set_count(before)


def _say_problems(data_set: DataSet, todo: list[int], done: set[int], checked: list, size: int) -> dict[int, str]:
    """Rank 0, before anything is loaded or written: the images of ``todo`` that cannot be used
    (from every rank's :func:`~ddrm_helpers.datasets.check_images`), each said in one line, and
    returned by index with their errors; a data set none of whose images can be read is refused."""
    problems = {index: problem for part, _ in checked for index, problem in part.items()}
    sizes = {index: found for _, part in checked for index, found in part.items()}
    if todo and len(problems) == len(todo) and not done:
        first = todo[0]
        raise ImageError(f"none of the {len(todo)} images of {data_set.description} can be read "
                         f"({data_set[first].name}: {problems[first]})")
    for note in data_set.notes:
        print(note, flush=True)
    for index in sorted(problems)[:SAID_MAX]:
        print(f"cannot evaluate {data_set[index].name} (image {index}): {problems[index]}", flush=True)
    if len(problems) > SAID_MAX:
        print(f"... and {len(problems) - SAID_MAX} more image(s) that cannot be evaluated: their records say why.",
              flush=True)
    small = sorted(i for i, (width, height) in sizes.items() if min(width, height) < size)
    if small:
        width, height = sizes[small[0]]
        print(f"note: {len(small)} image(s) are smaller than the model's {size}x{size} and are upscaled to it, so "
              f"their figures compare against an upscaled original (first: {data_set[small[0]].name}, "
              f"{width}x{height}).", flush=True)
    return problems


def _restore_all(config, networks, settings, data_set: DataSet, indices: list[int], degradation,
                 run_folder: RunFolder, ranks: Ranks, conditional: bool, progress: bool) -> None:
    """This rank's images, one at a time: restored, measured, saved, recorded; an image that cannot
    be read now (changed since it was checked) is recorded with its error."""
    size = degradation.image_shape[-1]
    degradation = degradation.to(settings.device)
    with tqdm(total=len(indices), desc=f"{config.name} {settings.task}", unit="image",
              disable=not progress or ranks.rank != 0) as bar:
        for index in indices:
            started = time.perf_counter()
            item = data_set[index]
            try:
                x = load_image(item.path, size)[None]
            except (ImageError, OSError) as err:
                run_folder.log.write(error_record(index, item, str(err)))
                bar.update()
                continue
            label = item.label if conditional and data_set.imagenet_labels else None
            inputs = Inputs(degradation=degradation, names=[safe_name(Path(item.name).stem, index)],
                            sources=[item.path], images=x, original=x, classes=None if label is None else [label])
            seed = image_seed(settings.seed, index)
            generator = torch.Generator(device=settings.device).manual_seed(seed)
            restoration = engine.restore(config, networks, inputs, settings, generator=generator, progress=False,
                                         verbose=False)
            record = image_record(index, item.name, item.path, x, restoration, degradation)
            record["seed"] = seed
            if restoration.classes is not None:
                record.update({"class": int(restoration.classes[0]), "class_guessed": label is None})
            run_folder.save_restored(index, restoration.restored[0])
            record["seconds"] = round(time.perf_counter() - started, 4)
            run_folder.log.write(record)
            bar.update()


def image_record(index: int, name: str, path, original: torch.Tensor, restoration, degradation) -> dict:
    """One image's figures: PSNR and SSIM of the restoration and of the degraded image against
    ``original``, the consistency ``||H x_hat - y||`` in [0, 1] pixel units (half its [-1, 1] value)
    and relative to ``||y||``, and whether the restoration is finite."""
    restored, baseline = restoration.restored.cpu(), restoration.baseline.cpu()
    residual = (degradation.H(restoration.restored) - restoration.measurement).double().norm().item()
    return {
        "index": index, "name": name, "path": str(path),
        "psnr": float(psnr(restored, original)[0]), "ssim": float(ssim(restored, original)[0]),
        "psnr_degraded": float(psnr(baseline, original)[0]), "ssim_degraded": float(ssim(baseline, original)[0]),
        "consistency": residual / 2,
        "consistency_rel": residual / restoration.measurement.double().norm().item(),
        "finite": bool(torch.isfinite(restored).all()),
    }


def _finish(run_folder: RunFolder, run: dict, data_set: DataSet, distribution: dict, device: str) -> Evaluation:
    """Rank 0: the records of every rank merged into ``records.jsonl`` (by index), the summary written."""
    found = run_folder.read_all().records
    records = [found[i] for i in range(len(data_set)) if i in found]
    if len(records) != len(data_set):
        lost = next(i for i in range(len(data_set)) if i not in found)
        raise RuntimeError(f"{len(data_set) - len(records)} image(s) have no record (image {lost}, ...); run the "
                           "same command again to complete the evaluation")
    summary = summarize(records, {**run, "device": device}, distribution)
    files = run_folder.finish(records, summary)
    return Evaluation(summary=summary, records=records, out_dir=run_folder.folder.path, files=files)
