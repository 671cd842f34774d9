"""Will it fit? What restoring an image at its own size needs in memory, told before anything runs.

A photo restored at its own size (``fit="full"``) holds the whole canvas in the sampler's state,
builds the operator at the canvas's size and runs the network on ``batch_size`` tiles at a time.
:func:`check_fits` adds these up for the chosen device and refuses, in one line and before any
download, a canvas that cannot fit, naming the largest size of the same shape that would.

What is counted (float32, 4 bytes a value; ``N = C*H*W`` values a canvas):

- the sampler's state: about 16 canvases per row restored at once (``x_t``, the spectral vector,
  the noise prediction and its transform, ``x_0``, ``y`` and its transforms, the update's terms, a
  noise draw, temporaries), and 5 shared per-coordinate vectors (singular values and masks);
- the result: every sample of every image, twice at the end (clipped and moved), and the
  measurement, its picture and its natural inverse;
- the operator: ``4 (H^2 + W^2)`` bytes for a separable one (blur, bicubic: its 1-D factors)
  and ``8 (H^2 + W^2)`` more while they are computed in float64, 17 bytes a value for inpainting
  (its mask and permutations);
- the networks: their weights, and the peak of the tensors alive during one forward pass on
  ``batch_size`` tiles (and the classifier's forward and backward, for guidance), measured by
  running them on PyTorch's ``meta`` device, which allocates nothing (:func:`network_bytes`).

Available: on a GPU, what ``torch.cuda.mem_get_info`` says is free; on the CPU, ``MemAvailable``
of ``/proc/meminfo`` (where there is none, nothing is refused). The figures are estimates: 10%
is kept in reserve.
"""

from __future__ import annotations

import functools
import json
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .errors import ImageError

RESERVE = 0.9  # of the available memory, what a run may plan to use
STATE_PER_ROW = 16  # canvases alive per row in the sampler
SHARED = 5  # per-coordinate vectors shared by the rows
FLOAT = 4


class TooLarge(ImageError):
    """An image whose restoration at its own size cannot fit in the memory of the device."""


def available_bytes(device) -> int | None:
    """Memory free for a run on ``device``, or None where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def canvas_bytes(canvas, channels: int, *, task: str, rows: int, images: int, samples: int,
                 learned_sigma: bool = False) -> int:
    """The bytes of a restoration of ``images`` canvases of ``canvas`` (height, width), ``samples``
    each, ``rows`` of them through the sampler at once, besides the networks (see the module notes)."""
    height, width = canvas
    values = channels * height * width
    per_row = STATE_PER_ROW + (1 if learned_sigma else 0)  # the network's 2C output channels: one canvas more
    state = per_row * rows * values + SHARED * values
    result = (2 * images * samples + 3 * images) * values
    return FLOAT * (state + result) + operator_bytes(task, canvas, channels)


def operator_bytes(task: str, canvas, channels: int) -> int:
    """The bytes of the operator ``task`` at ``canvas`` (height, width), with what its making needs."""
    height, width = canvas
    if task.startswith(("deblur", "sr_bicubic")):
        return (FLOAT + 8) * (height * height + width * width)
    if task.startswith("inp"):
        return 17 * channels * height * width
    return 0


def network_bytes(config, batch: int) -> int:
    """Weights plus the peak of live tensors of the config's networks on ``batch`` tiles: the
    diffusion network's forward pass, and the classifier's forward and backward for guidance."""
    model_weights, model_peak, classifier_weights, classifier_peak = _measured(_key(config))
    return model_weights + classifier_weights + batch * max(model_peak, classifier_peak)


def check_fits(config, canvas, *, device, task: str, rows: int, images: int, samples: int, batch: int,
               what: str, shown: tuple[int, int] | None = None, scale: int = 1) -> None:
    """Refuse, with one line, a restoration that cannot fit in ``device``'s memory.

    ``canvas`` (height, width) is the size restored; ``shown`` the size the user gave (the photo,
    before super-resolution by ``scale``), for the message and the largest size that would fit.
    """
    free = available_bytes(device)
    if free is None:
        return
    budget = RESERVE * free
    fixed = network_bytes(config, batch)
    channels = int(config.data.channels) if "channels" in config.data else 3

    def need(height: int, width: int) -> int:
        return fixed + canvas_bytes((height, width), channels, task=task, rows=rows, images=images, samples=samples,
                                    learned_sigma=_learns_sigma(config))

    height, width = canvas
    total = need(height, width)
    if total <= budget:
        return
    low, high = 0.0, 1.0  # the largest fraction of the size that fits, by bisection (need grows with it)
    for _ in range(40):
        middle = (low + high) / 2
        if need(max(1, round(height * middle)), max(1, round(width * middle))) <= budget:
            low = middle
        else:
            high = middle
    given_h, given_w = shown or canvas
    fits = (int(given_w * low), int(given_h * low))
    largest = (f"the largest of this shape that fits is about {fits[0]}x{fits[1]}" if min(fits) >= 1 else
               "even the networks alone do not fit")
    scaled = f" ({scale}x super-resolution makes it {width}x{height})" if scale > 1 else ""
    raise TooLarge(
        f"{what} is {given_w}x{given_h}{scaled}: restoring it at its own size needs about {_gb(total)} on "
        f"{torch.device(device)}, more than the {_gb(free)} free; {largest} (or use fit='crop', a smaller "
        "batch_size, fewer samples, or a device with more memory)"
    )


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def _learns_sigma(config) -> bool:
    from .config import learns_sigma

    return learns_sigma(config)


def _key(config) -> str:
    """The parts of a config that decide its networks' sizes, as a cache key."""
    parts = {name: config[name].to_dict() for name in ("model", "data", "classifier") if name in config}
    parts["checkpoints"] = dict(config.checkpoints)
    return json.dumps(parts, sort_keys=True, default=str)


@functools.lru_cache(maxsize=8)
def _measured(key: str) -> tuple[int, int, int, int]:
    """(model weights, model peak per tile, classifier weights, classifier peak per tile), in bytes."""
    from .config import Config
    from .models import build_classifier, build_model

    config = Config(json.loads(key))
    size = int(config.data.image_size)
    with torch.device("meta"):
        model = build_model(config).eval()
        classifier = build_classifier(config).eval() if "classifier" in config.checkpoints else None
    x = torch.zeros(1, 3, size, size, device="meta")
    t = torch.zeros(1, device="meta")
    extra = (torch.zeros(1, dtype=torch.long, device="meta"),) if classifier is not None else ()
    with torch.no_grad(), _LivePeak() as peak:
        model(x, t, *extra)
    model_peak = peak.peak
    classifier_weights = classifier_peak = 0
    if classifier is not None:
        x = x.clone().requires_grad_(True)
        with _LivePeak() as peak:
            torch.autograd.grad(classifier(x, t).logsumexp(-1).sum(), x)
        classifier_peak = peak.peak
        classifier_weights = _weights(classifier)
    return _weights(model), model_peak, classifier_weights, classifier_peak


def _weights(network) -> int:
    return sum(p.numel() for p in network.parameters()) * FLOAT


class _LivePeak(TorchDispatchMode):
    """The largest total of bytes held by tensors that operators made and that are still alive
    (views and in-place results hold no memory of their own), under this mode."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.is_mutable or getattr(func, "is_view", False):
            return out
        given = {id(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and id(tensor) not in given:
                size = tensor.untyped_storage().nbytes()
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._free, size)
        return out

    def _free(self, size: int) -> None:
        self.live -= size



def check_canvas(config, settings, canvas, *, images: int, what: str) -> None:
    """:func:`check_fits` for ``images`` images restored on ``canvas`` (a
    :class:`~ddrm_helpers.canvas.Canvas`) with ``settings`` (an engine ``Settings``)."""
    from .tiles import tile_count

    tiles = tile_count(canvas.padded, int(config.data.image_size), settings.tile_overlap)
    rows = min(images * settings.num_samples, max(1, settings.batch_size // tiles))
    check_fits(config, canvas.padded, device=settings.device, task=settings.task, rows=rows, images=images,
               samples=settings.num_samples, batch=min(settings.batch_size, tiles * rows), what=what,
               shown=canvas.photo, scale=canvas.factor)
