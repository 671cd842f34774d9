"""`run_config`: one config, end to end: images in, degraded, restored, measured, saved.

>>> result = run_config("celeba_hq")                 # the demo face, 4x super-resolution
>>> result = run_config("imagenet_256", task="inp_box", sigma_y=0.0, images=["my_photo.jpg"])
>>> show_results(result)

A config whose checkpoints cannot be had returns a `Skipped` result naming the file and the remedy,
never an exception, so that "run all" in the notebook goes on. Bad input (a file that is not an
image, an unknown task, a class name that is not an ImageNet class) raises a ``ValueError`` that
says what is wrong.

``num_samples=K`` restores every input K times in one batched call (the measurement repeated K
times) and adds the samples' mean and per-pixel spread to the result. The same engine restores a
user's own degraded photo (:func:`ddrm_helpers.restore.restore_photo`) and a whole data set
(:func:`ddrm_helpers.evaluation.evaluate`).

A thin front end: the images become :class:`~ddrm_helpers.engine.Inputs`, the arguments a
:class:`~ddrm_helpers.engine.Settings`; :func:`ddrm_helpers.engine.run` restores them and
:func:`ddrm_helpers.results.report` measures, saves and prints. Randomness: one ``torch.Generator``
seeded with ``seed`` makes every draw of a run, the measurement noise first (one ``[N, M]`` draw),
then the sampler's (see :mod:`ddrm_helpers.engine`).
"""

from __future__ import annotations

import os

import torch

from . import engine
from .config import load_config
from .degradations import make_degradation
from .demo import default_images
from .engine import Inputs, resolve_settings
from .images import load_images
from .results import RunResult, Skipped, image_names, report
from .store import CheckpointStore


def run_config(
    name: str,
    images=None,
    task: str | None = None,
    sigma_y: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    *,
    num_samples: int = 1,
    classes=None,
    eta: float | None = None,
    eta_b: float | None = None,
    classifier_scale: float | None = None,
    degradation_params: dict | None = None,
    batch_size: int | None = None,
    store: CheckpointStore | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike | None = None,
    save: bool = True,
    download: bool | None = None,
    progress: bool = True,
    callback=None,
    registry=None,
) -> RunResult | Skipped:
    """Degrade and restore ``images`` with config ``name``; see the module docstring.

    ``images``: paths, PIL images, arrays, or tensors in [-1, 1] (see :mod:`ddrm_helpers.images`;
    default: the shipped demo images that suit the config). ``task``, ``sigma_y`` (in [0, 1] pixel
    units), ``steps``, ``eta``, ``eta_b`` and ``classifier_scale`` default to the config's.
    ``num_samples``: restorations per image (their mean and spread are in the result).
    ``classes`` (Config 3): one ImageNet label (index or name) for all images or one per image; by
    default the demo images' own classes, or for other images the classifier's best guess, which
    is printed. ``degradation_params`` go to :func:`make_degradation` (a kernel, a mask, a seed).
    ``callback`` gets the sampler's dict after every step (see :func:`~ddrm_helpers.engine.sample_measurements`).
    Outputs go to a new folder under ``out_dir`` (default ``exp/image_samples``) unless ``save``
    is False.

    Checkpoints come from ``store`` (a :class:`~ddrm_helpers.store.CheckpointStore`; ``cache_dir``
    and ``registry`` are the older way to say the same). ``download``: None (the default) fetches a
    missing file unless its download already failed in this process (then the config is skipped in
    one line, since the failure was reported where it happened); True tries again; False never
    downloads.
    """
    config = load_config(name)
    settings = resolve_settings(config, task, sigma_y, steps, eta, eta_b, seed, num_samples,
                                classifier_scale=classifier_scale, batch_size=batch_size, device=device,
                                out_dir=out_dir, save=save, degradation_params=degradation_params,
                                callback=callback)
    size = int(config.data.image_size)
    sources = list(default_images(config)) if images is None else _as_list(images)
    if not sources:
        raise ValueError("no images given")
    x = load_images(sources, size)  # bad input fails here, before any download
    inputs = Inputs(
        degradation=make_degradation(settings.task, size, channels=x.shape[1], **(degradation_params or {})),
        names=image_names(sources), sources=sources, images=x, original=x, classes=classes,
    )
    restoration = engine.run(config, settings, inputs, store=CheckpointStore.of(store, cache_dir, registry),
                             download=download, progress=progress, callback=callback)
    return report(config, settings, inputs, restoration, out_dir=out_dir, save=save)


def _as_list(images) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    return [images]
