"""The command line: ``python -m ddrm_helpers <command>``.

    python -m ddrm_helpers demo     [--steps N] [--dir DIR] [--out DIR] [--device DEV]
    python -m ddrm_helpers status   [--config NAME ...] [--dir DIR] [--verify]
    python -m ddrm_helpers download [--config NAME ... | --all] [--dir DIR] [--quiet]
    python -m ddrm_helpers run      --config NAME [--config NAME ...] [--task TASK] [--sigma-y S]
                                    [--steps N] [--seed K] [--images PATH ...] [--classes C ...]
                                    [--out DIR] [--dir DIR] [--device DEV]
    python -m ddrm_helpers restore  --config NAME --task TASK --photo PATH [--mask PATH]
                                    [--kernel K ... | --kernel-h K ... --kernel-w K ...]
                                    [--sigma-y S | --estimate-noise] [--samples K] [--fit full|crop|pad]
                                    [--tile-overlap PX]
                                    [--steps N] [--seed K] [--reference PATH] [--classes C]
                                    [--out DIR] [--dir DIR] [--device DEV]
    python -m ddrm_helpers app      [--host ADDR] [--port N] [--share] [--concurrency N]
                                    [--max-file-size SIZE] [--dir DIR] [--device DEV]
    python -m ddrm_helpers eval     --config NAME --data PATH [--root DIR] [--task TASK] [--sigma-y S]
                                    [--steps N] [--seed K] [--limit N] [--inception-weights FILE | --no-kid]
                                    --out DIR [--dir DIR] [--device DEV]

``demo`` is the notebook's "run all" in a terminal: it fetches what it can, runs every config
whose checkpoints are there on the demo images with the config's defaults, skips the others with
the reason, prints a summary, and exits 0 when at least one config ran, 1 when none could (each
skipped one says why). ``status`` exits 0 after showing every config; asked about given configs
(``--config``) it exits 1 when one of them cannot run. ``status --verify`` hashes every file again
instead of believing the record of an earlier verification (docs/security.md). ``download`` exits 1
when a checkpoint it was asked for is still missing afterwards. ``run`` exits 1 when no config could
run (each skipped one says why), or when a restoration is not finite (NaN or infinity: its summary
line says FAILED); so do ``demo`` and ``restore``. ``restore`` restores your own degraded photo (docs/real-photos.md);
it exits 1 when the config cannot run. ``eval`` evaluates a config on a data set, resumably, and
under ``torchrun`` on several GPUs (docs/evaluation.md); it exits 1 when the config cannot run, a
restoration is not finite, an image could not be read (its record says why) or the disk filled up.
``app`` serves the restoration app (docs/app.md) on 127.0.0.1 until interrupted.

Every command exits 2 on bad input, with one line ``error: ...`` and no traceback, before anything
is downloaded or loaded: an argument out of range (``--steps`` outside 1 to the diffusion's
timesteps, ``--sigma-y`` outside [0, 1], a ``--seed`` outside 0 to 2**32 - 1, ``--samples 0``), a ``--device``
PyTorch cannot use here, an ``--out`` that is a file or cannot be written, a file that is not an
image, an unknown task or class, a mask of the wrong size, a task no photo can be, a kernel for a
task that takes none (:mod:`ddrm_helpers.validate`).

Nothing here imports PyTorch before the arguments are parsed, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import available_configs, known_configs
from .errors import ArgumentError, ConfigError
from .paths import CHECKPOINT_DIR_ENV


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddrm_helpers",
        description="DDRM image restoration with three pretrained diffusion models.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_common(sub):
        sub.add_argument("--config", action="append", choices=known_configs(), metavar="NAME",
                         help=f"a config ({', '.join(known_configs())}); repeat for several")
        sub.add_argument("--dir", metavar="DIR",
                         help=f"checkpoint folder (default: ${CHECKPOINT_DIR_ENV}, else exp/logs)")

    demo = commands.add_parser("demo", help="every config on the demo images, as the notebook's 'run all'")
    demo.add_argument("--steps", type=int, help="DDRM steps (default: 20)")
    demo.add_argument("--dir", metavar="DIR", help=f"checkpoint folder (default: ${CHECKPOINT_DIR_ENV}, else exp/logs)")
    demo.add_argument("--out", metavar="DIR", help="where run folders go (default: exp/image_samples)")
    demo.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    demo.set_defaults(handler=_demo)

    status = commands.add_parser("status", help="show which checkpoints are present and verified")
    add_common(status)
    status.add_argument("--verify", action="store_true",
                        help="hash every file again, whatever the records of earlier verifications say")
    status.set_defaults(handler=_status)

    download = commands.add_parser("download", help="download and verify the checkpoints of configs")
    add_common(download)
    download.add_argument("--all", action="store_true", help="every config (the default)")
    download.add_argument("--quiet", action="store_true", help="no progress bar or per-file lines")
    download.set_defaults(handler=_download)

    run = commands.add_parser("run", help="degrade and restore images with one or more configs")
    run.add_argument("--config", action="append", required=True, choices=known_configs(), metavar="NAME",
                     help=f"a config ({', '.join(known_configs())}); repeat for several")
    run.add_argument("--task", help="the degradation (default: the config's); see docs/ddrm.md")
    run.add_argument("--sigma-y", type=float, help="measurement noise in [0, 1] pixel units (default: the config's)")
    run.add_argument("--steps", type=int, help="DDRM steps (default: 20)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--images", nargs="+", metavar="PATH", help="image files (default: the demo images)")
    add_operator_files(run, "the model's size (its centred square is resized to it, as the images are)")
    run.add_argument("--classes", nargs="+", metavar="C",
                     help="Config 3: ImageNet classes, an index or a name, one for all images or one per image")
    run.add_argument("--out", metavar="DIR", help="where run folders go (default: exp/image_samples)")
    run.add_argument("--dir", metavar="DIR",
                     help=f"checkpoint folder (default: ${CHECKPOINT_DIR_ENV}, else exp/logs)")
    run.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    run.set_defaults(handler=_run)

    restore = commands.add_parser("restore", help="restore your own degraded photo (small, grey, blurred, masked, "
                                  "noisy)")
    restore.add_argument("--config", required=True, choices=known_configs(), metavar="NAME",
                         help=f"the config ({', '.join(known_configs())})")
    restore.add_argument("--task", required=True,
                         help="what happened to the photo: sr4, sr_bicubic4, color, inp_mask, deblur_gauss, deblur, "
                              "deno, ... (docs/real-photos.md)")
    restore.add_argument("--photo", required=True, metavar="PATH", help="the degraded photo")
    add_operator_files(restore, "the photo's size")
    noise = restore.add_mutually_exclusive_group()
    noise.add_argument("--sigma-y", type=float,
                       help="the photo's noise in [0, 1] pixel units (default: the config's)")
    noise.add_argument("--estimate-noise", action="store_true", help="estimate the photo's noise from the photo")
    restore.add_argument("--samples", type=int, default=1, metavar="K",
                         help="restorations to draw; with 2 or more, their mean and spread are saved too")
    restore.add_argument("--fit", choices=("full", "crop", "pad"), default="full",
                         help="full (the default): restore the photo at its own size, in tiles of the model's; "
                              "crop / pad: its centred square, or mirrored out to a square, at the model's size")
    restore.add_argument("--tile-overlap", type=int, metavar="PX",
                         help="with --fit full: pixels shared by neighbouring tiles (default: a quarter of a tile)")
    restore.add_argument("--steps", type=int, help="DDRM steps (default: 20)")
    restore.add_argument("--seed", type=int, default=0)
    restore.add_argument("--reference", metavar="PATH", help="the undamaged image, if you have it: PSNR/SSIM")
    restore.add_argument("--classes", metavar="C", help="Config 3: the photo's ImageNet class, an index or a name")
    restore.add_argument("--out", metavar="DIR", help="where run folders go (default: exp/image_samples)")
    restore.add_argument("--dir", metavar="DIR",
                         help=f"checkpoint folder (default: ${CHECKPOINT_DIR_ENV}, else exp/logs)")
    restore.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    restore.set_defaults(handler=_restore)

    evaluation = commands.add_parser("eval", help="evaluate a config on a data set: PSNR, SSIM, consistency, KID, "
                                     "FID; resumable; on many GPUs under torchrun")
    evaluation.add_argument("--config", required=True, choices=known_configs(), metavar="NAME",
                            help=f"the config ({', '.join(known_configs())})")
    evaluation.add_argument("--data", required=True, metavar="PATH",
                            help="a folder of images, a folder of class subfolders (ImageFolder), or a list file "
                                 "(one path per line, optionally followed by an ImageNet class index)")
    evaluation.add_argument("--root", metavar="DIR",
                            help="the folder a list file's paths are relative to (default: the list's folder)")
    evaluation.add_argument("--task", help="the degradation (default: the config's); see docs/ddrm.md")
    evaluation.add_argument("--sigma-y", type=float,
                            help="measurement noise in [0, 1] pixel units (default: the config's)")
    evaluation.add_argument("--steps", type=int, help="DDRM steps (default: 20, the paper's)")
    evaluation.add_argument("--seed", type=int, default=0, help="image i is restored with a seed made of this and i")
    evaluation.add_argument("--limit", type=int, metavar="N", help="the first N images of the data set only")
    kid = evaluation.add_mutually_exclusive_group()
    kid.add_argument("--inception-weights", metavar="FILE",
                     help="a local copy of torch-fidelity's Inception weights for KID/FID (else it downloads them)")
    kid.add_argument("--no-kid", action="store_true", help="no KID/FID: PSNR, SSIM and consistency only")
    evaluation.add_argument("--out", required=True, metavar="DIR",
                            help="the evaluation's folder: made, or resumed when it holds one with the same settings")
    evaluation.add_argument("--dir", metavar="DIR",
                            help=f"checkpoint folder (default: ${CHECKPOINT_DIR_ENV}, else exp/logs)")
    evaluation.add_argument("--device", help="cuda, cpu, ... (default: cuda, one GPU per process, when available)")
    evaluation.set_defaults(handler=_eval)

    app = commands.add_parser("app", help="serve the restoration app in a browser (Gradio; requirements-app.txt): "
                              "upload a photo, draw a mask, restore")
    app.add_argument("--host", default="127.0.0.1",
                     help="the address to serve on (default 127.0.0.1, this machine only; 0.0.0.0 serves your network)")
    app.add_argument("--port", type=int, help="the port (default: the first free one from 7860)")
    app.add_argument("--share", action="store_true",
                     help="also a public link, through Gradio's share servers (only when asked)")
    app.add_argument("--concurrency", type=int, default=1, metavar="N",
                     help="restorations at once on the device; the others wait in the queue (default 1)")
    app.add_argument("--max-file-size", default="25mb", metavar="SIZE", help="the largest upload (default 25mb)")
    app.add_argument("--dir", metavar="DIR", help=f"checkpoint folder (default: ${CHECKPOINT_DIR_ENV}, else exp/logs)")
    app.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    app.set_defaults(handler=_app)

    # Its own options (--device, --figure, --digits, --samples; --help) are read by ddrm_helpers.selftest
    check = commands.add_parser("selftest", add_help=False,
                                help="does DDRM really restore here? A small digits prior that ships with the "
                                     "package restores held-out digits, offline, in seconds (exit 0 / 1)")
    check.add_argument("options", nargs=argparse.REMAINDER)
    check.set_defaults(handler=_selftest)
    return parser


def add_operator_files(sub, mask_size: str) -> None:
    """``--mask`` (inp_mask) and ``--kernel`` / ``--kernel-h`` / ``--kernel-w`` (deblur), read by
    :mod:`ddrm_helpers.operator_inputs`."""
    sub.add_argument("--mask", metavar="FILE",
                     help=f"inp_mask: an image of {mask_size}, white = keep, black = missing (or a .npy / text "
                          "array, nonzero = keep)")
    sub.add_argument("--kernel", nargs="+", metavar="K|FILE",
                     help="deblur: the blur on both axes: numbers (a 1-D kernel), or a file: a small image (normalised "
                          "to sum 1) or a .npy / text array, 1-D or a separable 2-D kernel")
    sub.add_argument("--kernel-h", nargs="+", metavar="K|FILE", help="deblur: the 1-D kernel along the height")
    sub.add_argument("--kernel-w", nargs="+", metavar="K|FILE", help="deblur: the 1-D kernel along the width")


def _operator(args, size: int | None) -> tuple[dict, object]:
    """``make_degradation``'s parameters from ``--kernel*`` and the mask from ``--mask`` (resized to ``size``)."""
    from .operator_inputs import degradation_arguments

    return degradation_arguments(args.task, mask=args.mask, kernel=args.kernel, kernel_h=args.kernel_h,
                                 kernel_w=args.kernel_w, mask_size=size)


def _store(args):
    """The one checkpoint store of a command (``--dir``, else ``$DDRM_CHECKPOINT_DIR``, else exp/logs)."""
    from .store import CheckpointStore

    return CheckpointStore(args.dir)


def _choose_threads(device) -> None:
    """PyTorch's thread count for the work of this command (:mod:`ddrm_helpers.threads`); one line on
    stderr when the CPU is busy and fewer threads were chosen."""
    from . import threads

    threads.apply(device, say=lambda line: print(line, file=sys.stderr, flush=True))


def _ran_well(result) -> bool:
    """A result that ran and is finite; a NaN restoration has already said FAILED in its summary line."""
    return not result.skipped and result.finite


def _status(args) -> int:
    status = _store(args).status(args.config, verify=args.verify)
    print(status)
    return 0 if not args.config or status.all_ready else 1


def _download(args) -> int:
    if args.all and args.config:
        raise ConfigError("give --config NAME ... or --all, not both")
    status = _store(args).ensure(args.config, progress=not args.quiet, quiet=args.quiet)
    print()
    print(status)
    return 0 if status.all_ready else 1


def _demo(args) -> int:
    from .notebook import run_summary
    from .readiness import prepare_checkpoints
    from .runner import run_config

    store = _store(args)
    readiness = prepare_checkpoints(store=store)  # one line per file that cannot be had
    if not readiness.ready:
        print(readiness, file=sys.stderr)
        return 1
    _choose_threads(args.device)
    results = [run_config(name, steps=args.steps, store=store, out_dir=args.out, device=args.device)
               for name in readiness.ready]
    print()
    run_summary(*results)
    if readiness.missing:
        print(readiness)
    return 0 if all(result.finite for result in results) else 1


def _run(args) -> int:
    from .runner import run_config

    classes = args.classes[0] if args.classes and len(args.classes) == 1 else args.classes
    store = _store(args)
    _choose_threads(args.device)
    results = [run_config(name, images=args.images, task=args.task, sigma_y=args.sigma_y, steps=args.steps,
                          seed=args.seed, classes=classes, out_dir=args.out, store=store, device=args.device,
                          degradation_params=args.operators[name] or None)
               for name in args.config]
    if all(result.skipped for result in results):
        print("Nothing could run: see the reasons above.", file=sys.stderr)
        return 1
    return 0 if all(result.skipped or result.finite for result in results) else 1


def _restore(args) -> int:
    from .restore import restore_photo

    kernels, mask = args.operator
    _choose_threads(args.device)
    result = restore_photo(
        args.config, args.photo, args.task, sigma_y="estimate" if args.estimate_noise else args.sigma_y,
        steps=args.steps, seed=args.seed, num_samples=args.samples, mask=mask, fit=args.fit,
        tile_overlap=args.tile_overlap, reference=args.reference, classes=args.classes,
        degradation_params=kernels or None,
        out_dir=args.out, store=_store(args), device=args.device,
    )
    if result.skipped:
        print("Nothing could run: see the reason above.", file=sys.stderr)
    return 0 if _ran_well(result) else 1


def _app(args) -> int:
    """Serve the app until interrupted; a port that cannot be had is an error line (exit 2)."""
    from .app import serve

    try:
        serve(host=args.host, port=args.port, share=args.share, inline=False, max_file_size=args.max_file_size,
              store=_store(args), device=args.device, concurrency=args.concurrency)
    except OSError as err:
        said = str(err).split(". ")[0]  # Gradio's advice after it is about launch()'s own arguments
        raise ArgumentError(f"cannot serve on {args.host}:{args.port or 'a port from 7860'}: {said}; "
                            "give another --port") from None
    return 0


def _selftest(args) -> int:
    from .selftest import main as selftest_main

    return selftest_main(args.options)


def _eval(args) -> int:
    from .errors import OutDirWriteError
    from .evaluation import evaluate

    try:
        result = evaluate(
            args.config, args.data, task=args.task, sigma_y=args.sigma_y, steps=args.steps, seed=args.seed,
            out_dir=args.out, root=args.root, limit=args.limit, features=None if args.no_kid else "inception",
            inception_weights=args.inception_weights, store=_store(args), device=args.device,
        )
    except OutDirWriteError as err:  # a full disk: not bad input, but one line too; a rerun resumes
        print(f"error: {err}", file=sys.stderr)
        return 1
    if result.skipped and os.environ.get("RANK", "0") == "0":
        print("Nothing could run: see the reason above.", file=sys.stderr)
    return 0 if _ran_well(result) and (result.skipped or result.complete) else 1


def check_arguments(args) -> None:
    """Refuse bad arguments before anything is downloaded or loaded (``ValueError`` subclasses that
    name the flag). The library checks them again, under their Python names; here each config of
    the command is checked with the settings it would run with, so that ``run`` with several
    configs, and ``demo`` (which downloads first), stop before the first download."""
    from . import validate

    if getattr(args, "dir", None) is not None:
        validate.check_folder(args.dir, "--dir")
    if args.command == "app":
        _check_app_arguments(args)
    if args.command not in ("demo", "run", "restore", "eval"):
        return
    from . import threads
    from .config import load_config
    from .engine import resolve_settings
    from .schedule import betas_from_config

    if args.device is not None:
        validate.check_device(args.device, "--device")
    threads.requested()  # DDRM_THREADS, if set, is a count
    if args.out is not None:
        validate.check_out_dir(args.out, "--out")
    seed = getattr(args, "seed", 0)
    validate.check_seed(seed, "--seed")
    sigma_y = getattr(args, "sigma_y", None)
    if sigma_y is not None:
        validate.check_sigma_y(sigma_y, "--sigma-y")
    samples = getattr(args, "samples", 1)
    validate.check_count(samples, "--samples", "how many restorations to draw, 1 or more")
    if getattr(args, "limit", None) is not None:
        validate.check_count(args.limit, "--limit", "how many images of the data set to evaluate, 1 or more")
    task = getattr(args, "task", None)
    if args.command == "restore":
        args.operator = _operator(args, None)
    args.operators = {}
    names = available_configs() if args.command == "demo" else args.config
    for name in [names] if isinstance(names, str) else names:
        config = load_config(name)
        if args.steps is not None:
            validate.check_steps(args.steps, len(betas_from_config(config)), "--steps")
        if getattr(args, "tile_overlap", None) is not None:
            from .tiles import check_overlap

            check_overlap(args.tile_overlap, int(config.data.image_size), "--tile-overlap")
        resolve_settings(config, task, sigma_y, args.steps, None, None, seed, samples, device=args.device,
                         out_dir=args.out, save=True, tile_overlap=getattr(args, "tile_overlap", None))
        if args.command == "run":
            _check_run_inputs(args, config)


def _check_app_arguments(args) -> None:
    """``app``: the port, the concurrency, the device, and Gradio itself, before anything is served."""
    from . import validate
    from .app import GRADIO_MINIMUM, gradio_version

    if args.port is not None and not 1 <= args.port <= 65535:
        raise ArgumentError(f"--port is a TCP port, 1 to 65535; got {args.port}")
    validate.check_count(args.concurrency, "--concurrency", "restorations at once on the device, 1 or more")
    if args.device is not None:
        validate.check_device(args.device, "--device")
    version = gradio_version()
    if version is None or version < GRADIO_MINIMUM:
        found = "is not installed" if version is None else f"is {'.'.join(map(str, version))}"
        raise ArgumentError(f"the app needs Gradio {'.'.join(map(str, GRADIO_MINIMUM))} or later, which {found}: "
                            "pip install -r requirements-app.txt")


def _check_run_inputs(args, config) -> None:
    """``run``: the task for this config's image size, with its mask or kernel (kept in
    ``args.operators`` for the run), and the classes, before its first config runs."""
    from .classes import resolve_classes
    from .degradations import make_degradation
    from .demo import default_images

    size = int(config.data.image_size)
    params, mask = _operator(args, size)
    if mask is not None:
        params["mask"] = mask
    args.operators[config.name] = params
    if args.task is not None:
        make_degradation(args.task, size, **params)
    if args.classes and "classifier" in config.checkpoints:
        count = len(args.images) if args.images else len(default_images(config))
        resolve_classes(args.classes[0] if len(args.classes) == 1 else args.classes, count)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["selftest"]:  # options that start with '-' are its own: argparse would claim them
        return _selftest(argparse.Namespace(options=argv[1:]))
    args = build_parser().parse_args(argv)  # --help and usage errors end here, before any heavy import
    try:
        check_arguments(args)
        return args.handler(args)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
