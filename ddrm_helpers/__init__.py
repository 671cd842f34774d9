"""ddrm-demo's helper package: everything the notebook and the CLI do is one call into it.

Modules, one idea each:

- ``config``       the three DDRM configs and ``load_config``
- ``registry``     the checkpoint registry (``configs/checkpoints.yml``)
- ``paths``        the reference folder layout and the environment variables that move it
- ``errors``       the exceptions
- ``store``        ``CheckpointStore``: the checkpoint root and registry in one object, and its rules;
                   ``fetch_checkpoint``, ``checkpoint_status``, ``ensure_checkpoints``
- ``fetch_policy`` the downloader's policy: the lock, sources in order, retries, the one failure report
- ``http_protocol`` the downloader's HTTP: one GET, redirects, ranges, headers, the body under a rate floor
- ``http_deadline`` a deadline on a whole response head (a server that drips its headers is cut)
- ``part_writer``  the downloader's ``.part`` file: its record, its bytes and hash, the disk
- ``download``     the downloader's public names in one place (``fetch_checkpoint``, ``RetryPolicy``, ...)
- ``verify``       is a file the right one (size, sha256, tensor manifest), and the record of it
- ``torch_zip``    a ``torch.save`` zip checked from its directory alone, before anything loads it
- ``safefs``       the file-system rules of everything we write: no link followed, nothing foreign written
- ``status``       the checkpoint table: which configs can run, and why not
- ``readiness``    ``prepare_checkpoints``: fetch what can be had, one line per file that cannot
- ``degradations`` the linear degradations H of DDRM by name (``make_degradation``)
- ``operators``    the degradations themselves, each with its exact SVD (``Degradation`` and its kinds)
- ``factors``      their building blocks: 1-D matrices, kernels, exact decompositions, size checks
- ``masks``        inpainting masks: text, boxes, from a file or an array
- ``schedule``     the diffusion's noise schedule and DDRM's timestep sequence
- ``sampler``      the DDRM sampler (``ddrm_sample``)
- ``models``       the three networks (``build_model``, ``build_classifier``, ``load_pretrained``)
- ``images``       loading any photo as a tensor, saving tensors as pictures
- ``metrics``      PSNR and SSIM
- ``classes``      ImageNet class labels by index or name
- ``engine``       restore measurements with a config's networks under one frozen ``Settings`` (``Skipped``)
- ``tiles``        any size: the network on overlapping tiles of its own size, blended (``TiledDenoiser``)
- ``canvas``       a photo at its own size: its canvas, and the mirrored padding of one under a tile
- ``budget``       will it fit? a canvas's memory on the device, refused in one line before any download
- ``results``      ``RunResult``: a run's result, its metrics, its files, image names
- ``demo``         the shipped demo images: which suit a config, their classes
- ``runner``       ``run_config``: one config end to end (images, degrade, restore, measure, save)
- ``restore``      ``restore_photo``: a user's degraded photo is the measurement; restore it
- ``evaluation``   ``evaluate``: a config on a data set, resumable, on one GPU or many (torchrun)
- ``datasets``     the data sets ``evaluate`` reads: a folder, a list file, an ImageFolder; each image checked
- ``summary``      an evaluation's table: mean and 95% interval per metric, beside the paper's figures
- ``runfolder``    the evaluation folder over a run's life: looked at, taken, written, finished
- ``records``      an evaluation's records: one line per image, read back to resume, bad lines set aside
- ``outdir``       the evaluation folder's file rules: no link followed, whole files, a lock
- ``ranks``        an evaluation's processes under torchrun: rank 0's work handed to every rank
- ``distribution`` KID and FID of an evaluation, over every rank
- ``noise``        ``estimate_noise``: a photo's noise level from the photo alone
- ``display``      ``show_results`` / ``show_grid``: the inline figures
- ``progress``     the restoration as it happens: ``collect_frames``, ``show_progress``, ``animate_progress``
- ``notebook``     the notebook's uploads, side-by-side comparison and summary
- ``app``          the restoration app (Gradio, optional): ``build_app``, ``serve``; ``python -m ddrm_helpers app``
- ``selftest``     does DDRM really restore here? A small trained digits prior, offline, in seconds
- ``prior_checks`` what the self-test measures: gain, colour, measurement noise, measurements kept
- ``prior_sampling`` the digits prior with nothing measured, and under float16 autocast
- ``threads``      how many threads PyTorch computes with on a CPU
- ``validate``     the checks of every argument, made before anything is downloaded or loaded
- ``cli``          ``python -m ddrm_helpers ...``

The public names below are imported on first use (PEP 562), so that ``import ddrm_helpers`` and
``python -m ddrm_helpers --help`` do not import PyTorch; ``from ddrm_helpers import run_config``
works as ever.
"""

import importlib

# Where each public name lives: imported from there on first access (module __getattr__ below).
_SOURCES = {
    "config": ("Config", "available_configs", "load_config"),
    "degradations": ("Degradation", "available_degradations", "box_mask", "make_degradation", "text_mask"),
    "display": ("show_grid", "show_results"),
    "fetch_policy": ("RetryPolicy",),
    "errors": ("ArgumentError", "CheckpointMismatchError", "ChecksumError", "ClassLabelError", "ConfigError",
               "DegradationError", "DownloadError", "ImageError", "ModelInputError", "SamplingError"),
    "evaluation": ("Evaluation", "evaluate"),
    "models": ("build_classifier", "build_model", "fast_path_options", "load_pretrained", "set_fast_path"),
    "noise": ("estimate_noise",),
    "progress": ("animate_progress", "collect_frames", "show_progress"),
    "readiness": ("prepare_checkpoints",),
    "registry": ("CheckpointSpec", "load_registry"),
    "restore": ("degraded_photo", "restore_photo"),
    "results": ("RunResult", "Skipped"),
    "runner": ("run_config",),
    "sampler": ("ddrm_sample", "sigma_0_from_sigma_y"),
    "schedule": ("timestep_sequence",),
    "status": ("CheckpointStatus",),
    "store": ("CheckpointStore", "checkpoint_status", "ensure_checkpoints", "fetch_checkpoint"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}
_SUBMODULES = (*_SOURCES, "classes", "cli", "datasets", "demo", "download", "engine", "factors", "http_deadline",
               "http_protocol", "images", "masks", "metrics", "notebook", "operator_inputs", "operators", "part_writer",
               "paths", "prior_checks", "prior_sampling", "safefs", "selftest", "summary", "threads", "torch_zip",
               "validate", "verify")
_SUBMODULES += ("distribution", "outdir", "ranks", "records", "runfolder")  # the evaluation's
_SUBMODULES += ("budget", "canvas", "tiles")  # any size

__all__ = [
    "ArgumentError",
    "CheckpointMismatchError",
    "CheckpointSpec",
    "CheckpointStatus",
    "CheckpointStore",
    "ChecksumError",
    "ClassLabelError",
    "Config",
    "ConfigError",
    "Degradation",
    "DegradationError",
    "DownloadError",
    "Evaluation",
    "ImageError",
    "ModelInputError",
    "RetryPolicy",
    "RunResult",
    "SamplingError",
    "Skipped",
    "animate_progress",
    "available_configs",
    "available_degradations",
    "box_mask",
    "build_classifier",
    "build_model",
    "checkpoint_status",
    "collect_frames",
    "ddrm_sample",
    "degraded_photo",
    "ensure_checkpoints",
    "estimate_noise",
    "fast_path_options",
    "evaluate",
    "fetch_checkpoint",
    "load_config",
    "load_pretrained",
    "load_registry",
    "make_degradation",
    "prepare_checkpoints",
    "restore_photo",
    "run_config",
    "set_fast_path",
    "show_grid",
    "show_progress",
    "show_results",
    "sigma_0_from_sigma_y",
    "text_mask",
    "timestep_sequence",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Import a public name (or a submodule) on first access, and keep it."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
