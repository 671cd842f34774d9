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
restoration is saved as ``restored/<index>.png``.

Seeds: image ``i`` is restored with a generator of its own, seeded from
``numpy.random.SeedSequence([seed, i])``, so its result is the same whichever process restores it,
in whatever order: one process or eight give the same records, image by image.

Resuming: ``out_dir`` keeps the settings (``run.json``). Run the same command again after a crash
or a kill and the images that have a record are not computed again; other settings into the same
folder are refused. Records are matched to the data set by the images' names, so a larger
``limit`` extends an evaluation.

Many processes: under ``torchrun`` (``WORLD_SIZE`` > 1) the processes join a ``torch.distributed``
group (NCCL on GPUs, gloo on CPUs), each on its own GPU (``LOCAL_RANK``) with its own copy of the
networks; rank 0 checks the folder and fetches the checkpoints first, the images left are dealt out
over the ranks, and rank 0 merges the records (``records.jsonl``) and writes the summary
(``summary.md``, ``summary.csv``, ``summary.json``; :mod:`ddrm_helpers.summary`).

KID and FID come from ``torchmetrics`` over all the images (every rank's, and those of earlier
runs, read back from ``restored/``) against the originals, with torchmetrics' Inception-v3
(``features="inception"``, which needs ``torch-fidelity`` and its weights file; docs/evaluation.md)
or any network given as ``features`` (``uint8`` images ``[N, 3, H, W]`` in, ``[N, D]`` features
out). Without them the evaluation still gives PSNR and SSIM, and says in one line why KID is missing.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from tqdm.auto import tqdm

from . import engine, threads, validate
from .config import load_config
from .datasets import DataSet, open_data
from .degradations import make_degradation
from .engine import Inputs, resolve_settings
from .errors import ArgumentError
from .images import load_image, save_image, to_uint8
from .metrics import psnr, ssim
from .results import Skipped, json_safe, safe_name
from .store import CheckpointStore
from .summary import markdown, summarize, write_summary

# What must agree between an evaluation folder and a run that resumes it
RUN_KEYS = ("config", "task", "sigma_y", "steps", "eta", "eta_b", "seed", "classifier_scale", "image_size")
FEATURE_BLOCK = 32  # images per feature-network call for KID / FID
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000  # the usual size (and torchmetrics' default); all the images when there are fewer


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
    whose checkpoints cannot be had. Bad arguments raise ``ValueError`` before anything is loaded.
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
    before = threads.set_count(count)
    try:
        folder = Path(out_dir).expanduser()
        remaining = ranks.on_zero(lambda: _prepare(folder, run, data_set))
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
        if ranks.rank == 0 and len(remaining) < len(data_set):
            print(f"Resuming {folder}: {len(data_set) - len(remaining)} of {len(data_set)} images already have "
                  "a record.", flush=True)
        conditional = "classifier" in config.checkpoints
        if ranks.rank == 0 and conditional and not data_set.imagenet_labels:
            print(f"{data_set.description} has no ImageNet classes: each image gets the classifier's best guess "
                  "(its record says class_guessed).", flush=True)
        _restore_all(config, networks, settings, data_set, remaining[ranks.rank::ranks.world], degradation,
                     folder, ranks, conditional, progress)
        ranks.barrier()
        distribution = distribution_metrics(data_set, size, folder, features, inception_weights, ranks,
                                            settings.device, settings.seed)
        evaluation = ranks.on_zero(lambda: _finish(folder, run, data_set, distribution, str(settings.device)))
        if ranks.rank == 0:
            print(evaluation, flush=True)
        return evaluation
    finally:
        ranks.close()
        threads.set_count(before)


class Ranks:
    """This process's place among the evaluation's processes: rank 0 of 1, or one of torchrun's."""

    def __init__(self, rank: int = 0, world: int = 1, owned: bool = False):
        self.rank, self.world, self.owned = rank, world, owned

    @classmethod
    def join(cls, device: torch.device) -> Ranks:
        """The group already set up by the caller, else torchrun's (``WORLD_SIZE`` > 1, joined here:
        NCCL on a GPU, gloo on a CPU), else a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), owned=True)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        values = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def on_zero(self, work):
        """``work()`` run by rank 0 alone, its value (or its exception) handed to every rank."""
        outcome = None
        if self.rank == 0:
            try:
                outcome = (True, work())
            except Exception as err:  # raised on every rank below, so that none waits for the others
                outcome = (False, err)
        if self.world > 1:
            box = [outcome]
            dist.broadcast_object_list(box, src=0)
            outcome = box[0]
        ok, value = outcome
        if not ok:
            raise value
        return value

    def close(self) -> None:
        if self.owned:
            dist.destroy_process_group()


def _prepare(folder: Path, run: dict, data_set: DataSet) -> list[int]:
    """Rank 0: the folder made or resumed (same settings, same images), and the indices left to do."""
    settings_file = folder / "run.json"
    if settings_file.exists():
        kept = json.loads(settings_file.read_text())
        differ = [key for key in RUN_KEYS if kept.get(key) != run[key]]
        if differ:
            said = "; ".join(f"{key} {kept.get(key)!r} there, {run[key]!r} here" for key in differ)
            raise ArgumentError(f"{folder} holds an evaluation with other settings ({said}): give another output "
                                "folder, or the same settings to resume it")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(settings_file, json.dumps(run, indent=1) + "\n")
    done = read_records(folder)
    for index, record in done.items():
        if index < len(data_set) and record["name"] != data_set[index].name:
            raise ArgumentError(f"{folder} holds a record of image {index} named {record['name']!r}, but image "
                                f"{index} of {data_set.description} is {data_set[index].name!r}: another data set "
                                "(or order); give another output folder")
    return [i for i in range(len(data_set)) if i not in done]


def read_records(folder: Path) -> dict[int, dict]:
    """The records in ``folder/records/*.jsonl`` by index (the first of an index; a line cut short
    by a kill is skipped)."""
    records = {}
    for log in sorted((folder / "records").glob("*.jsonl")):
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records.setdefault(int(record["index"]), record)
    return records


def _restore_all(config, networks, settings, data_set: DataSet, indices: list[int], degradation, folder: Path,
                 ranks: Ranks, conditional: bool, progress: bool) -> None:
    """This rank's images, one at a time: restored, measured, saved, recorded."""
    (folder / "restored").mkdir(exist_ok=True)
    (folder / "records").mkdir(exist_ok=True)
    size = degradation.image_shape[-1]
    degradation = degradation.to(settings.device)
    with RecordLog(folder / "records" / f"rank-{ranks.rank:05d}.jsonl") as log, \
            tqdm(total=len(indices), desc=f"{config.name} {settings.task}", unit="image",
                 disable=not progress or ranks.rank != 0) as bar:
        for index in indices:
            started = time.perf_counter()
            item = data_set[index]
            x = load_image(item.path, size)[None]
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
            save_png(restoration.restored[0], folder / "restored" / f"{index:06d}.png")
            record["seconds"] = round(time.perf_counter() - started, 4)
            log.write(record)
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


class RecordLog:
    """A rank's record file: one JSON line per image, appended, flushed and synced to the disk."""

    def __init__(self, path: Path):
        self.file = open(path, "ab")  # noqa: SIM115 (closed by __exit__)
        if self.file.tell() and not path.read_bytes().endswith(b"\n"):  # a line cut short by a kill
            self.file.write(b"\n")

    def write(self, record: dict) -> None:
        self.file.write((json.dumps(json_safe(record)[0], allow_nan=False) + "\n").encode())
        self.file.flush()
        os.fsync(self.file.fileno())

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def save_png(image: torch.Tensor, path: Path) -> None:
    """``image`` as a PNG at ``path``, written under a temporary name and renamed: never half a file."""
    partial = path.with_name(f".{path.stem}.partial.png")
    save_image(image, partial)
    os.replace(partial, path)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def distribution_metrics(data_set: DataSet, size: int, folder: Path, features, weights, ranks: Ranks,
                         device: torch.device, seed: int) -> dict:
    """KID (x 1e3, the mean and standard deviation over subsets) and FID of the restored images in
    ``folder/restored`` against the originals, every rank computing the features of its share and
    torchmetrics gathering them; or a ``note`` saying in one line why not. Called by every rank."""
    count = len(data_set)
    found = {"images": count, "kid_x1e3": None, "kid_std_x1e3": None, "fid": None, "note": None}
    if count < 2:
        return {**found, "note": "KID/FID not computed: they need at least 2 images."}
    if ranks.rank != 0:
        ranks.barrier()  # rank 0 fetches the weights first, the others then read them from the cache
    network, why = feature_network(features, weights)
    if ranks.rank == 0:
        ranks.barrier()
    # Image blocks dealt out so that torchmetrics, gathering each rank's n-th block in rank order,
    # sees them in index order: the features, and so KID's random subsets, do not depend on the split.
    blocks = math.ceil(count / FEATURE_BLOCK)
    mine = [range(b * FEATURE_BLOCK, min((b + 1) * FEATURE_BLOCK, count)) if b < blocks else range(0)
            for b in range(ranks.rank, math.ceil(blocks / ranks.world) * ranks.world, ranks.world)]
    if why is None:
        missing = [i for block in mine for i in block if not (folder / "restored" / f"{i:06d}.png").is_file()]
        if missing:
            why = (f"KID/FID not computed: {len(missing)} restored image(s) are missing from {folder / 'restored'} "
                   f"(image {missing[0]}, ...)")
    notes = [note for note in ranks.gather(why) if note]
    if notes:
        return {**found, "note": notes[0]}

    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # KID's note that it keeps every feature in memory
        kid = KernelInceptionDistance(feature=network, subsets=KID_SUBSETS,
                                      subset_size=min(KID_SUBSET_SIZE, count)).to(device)
        fid = FrechetInceptionDistance(feature=network, input_img_size=(3, size, size)).to(device)
    for block in mine:  # as many blocks on every rank (some empty): torchmetrics gathers them one by one
        real = _uint8_batch([load_image(data_set[i].path, size) for i in block], size).to(device)
        fake = _uint8_batch([_read_png(folder / "restored" / f"{i:06d}.png") for i in block], size).to(device)
        for metric in (kid, fid):
            metric.update(real, real=True)
            metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # KID's subsets come from the global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {**found, "kid_x1e3": float(kid_mean) * 1e3, "kid_std_x1e3": float(kid_std) * 1e3,
            "fid": float(fid.compute())}


def feature_network(features, weights) -> tuple[torch.nn.Module | None, str | None]:
    """The network KID and FID compare images through, or None and the one line that says why not."""
    if features is None:
        return None, "KID/FID not computed: no feature network (features=None)."
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        return None, ("KID/FID not computed: torchmetrics is not installed (pip install torchmetrics "
                      "torch-fidelity; docs/evaluation.md).")
    if isinstance(features, torch.nn.Module):
        return features, None
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return None, ("KID/FID not computed: torch-fidelity, which provides the Inception network, is not "
                      "installed (pip install torch-fidelity; docs/evaluation.md).")
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                  feature_extractor_weights_path=None if weights is None else str(weights)), None
    except Exception as err:  # no network, a proxy, a bad file: said in one line, PSNR/SSIM stand
        return None, (f"KID/FID not computed: the Inception weights could not be had ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); docs/evaluation.md says where to put them.")


def _uint8_batch(images: list, size: int) -> torch.Tensor:
    """Images as one ``uint8`` batch ``[N, 3, size, size]`` (what the Inception network takes)."""
    if not images:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.stack([torch.from_numpy(image if isinstance(image, np.ndarray) else to_uint8(image)).permute(2, 0, 1)
                        for image in images])


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def _finish(folder: Path, run: dict, data_set: DataSet, distribution: dict, device: str) -> Evaluation:
    """Rank 0: the records of every rank merged into ``records.jsonl`` (by index), the summary written."""
    found = read_records(folder)
    records = [found[i] for i in range(len(data_set)) if i in found]
    if len(records) != len(data_set):
        lost = next(i for i in range(len(data_set)) if i not in found)
        raise RuntimeError(f"{len(data_set) - len(records)} image(s) have no record (image {lost}, ...); run the "
                           "same command again to complete the evaluation")
    merged = folder / "records.jsonl"
    _write_atomically(merged, "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
    summary = summarize(records, {**run, "device": device}, distribution)
    files = [merged, *write_summary(summary, folder)]
    return Evaluation(summary=summary, records=records, out_dir=folder, files=files)
