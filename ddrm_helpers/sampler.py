"""The DDRM sampler (Kawar, Elad, Ermon, Song, NeurIPS 2022) as one plain function.

DDRM restores ``x`` from ``y = H x + sigma_0 z`` with a pretrained diffusion model and no training.
With ``H = U diag(s) V^T`` it works on the spectral coordinates ``xbar = V^T x`` and
``ybar_i = (U^T y)_i / s_i``: in them the problem is diagonal, coordinate i sees ``x`` through
``ybar_i`` with noise ``sigma_0 / s_i``, or not at all when ``s_i = 0``.

The diffusion is read in its variance-exploding form: ``x_t / sqrt(abar_t) = x_0 + sigma_t eps``
with ``sigma_t = sqrt((1 - abar_t) / abar_t)``. Going from step t to the next, lower level
``sigma' = sigma_{t_next}`` (0 after the last step), with ``x0bar = V^T x0_pred``,
``epsbar = V^T eps_pred`` and a fresh standard normal ``n``, each coordinate takes (paper, eq. 8):

* ``s_i = 0`` (missing):   ``x0bar + sqrt(1 - eta^2) sigma' epsbar + eta sigma' n``
* ``s_i sigma' < sigma_0`` (the target is less noisy than y):
  ``x0bar + sqrt(1 - eta^2) sigma' (ybar - x0bar) / (sigma_0 / s_i) + eta sigma' n``
* ``s_i sigma' >= sigma_0`` (the target is noisier than y):
  ``(1 - eta_b) x0bar + eta_b ybar + sqrt(sigma'^2 - eta_b^2 sigma_0^2 / s_i^2) n``

and ``x_{t_next} = sqrt(abar_{t_next}) V xbar``. The start, at the largest timestep T of the
sequence, is ``xbar_T = ybar + sqrt(sigma_T^2 - sigma_0^2 / s_i^2) n`` where ``s_i sigma_T >= sigma_0``
and ``sigma_T n`` elsewhere (paper eq. 7; the reference code's rule for the rest).

Noise and reproducibility: the sampler draws image-shaped standard normals ``[B, C, H, W]``, one
before the loop (for ``x_T``) and one per step, in that order, all from ``generator`` (or from the
``noise`` function given instead), on the device and in the dtype of ``y``, and carries each into
the spectral domain with ``V^T`` (orthonormal, so the spectral draw is standard normal too).
Coordinate i of a draw serves whichever case i is in. Same generator state, device and inputs: same
output. Drawn in the image's layout, a pixel's noise does not depend on the canvas around it: for an
operator that acts per pixel or per block, a large canvas restored with the noise of its tiles gives
each tile exactly what restoring that tile alone gives (tests/test_tiles.py).

A singular value at or below ``sqrt(eps(dtype)) * max(s)`` (3.5e-4 of the largest in float32)
is treated as 0: ``ybar_i = (U^T y)_i / s_i`` would amplify the rounding of ``y`` by ``1 / s_i``.
The operators stay exact; only the sampler declines to trust those coordinates. Blurs have such
values (at 256 x 256, down to 1e-10 for ``deblur_aniso``).

Inference mode: ``ddrm_sample`` may run inside ``torch.inference_mode()``; classifier guidance then
takes its gradient outside inference mode, on copies of ``x_t``, ``t`` and the classes (the
networks' weights must be ordinary tensors: load them outside inference mode, as usual).

Compiled network: with the fast-path switch ``compile_mode`` set
(``ddrm_helpers.models.set_fast_path(compile_mode="reduce-overhead")``, off by default), the
diffusion network runs through ``torch.compile(model, mode=compile_mode, dynamic=False)``, compiled
once per network, mode and batch size (torch keeps at most 8 compiled versions of a network class;
past that it runs eager). ``"reduce-overhead"`` replays CUDA graphs: each step is one launch instead
of one per kernel. Each output is copied before the next step overwrites it. The classifier stays
eager. See docs/performance.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import SamplingError
from .models.fastpath import cudnn_scope, fast_path, prepare_input
from .schedule import alphas_cumprod, linear_betas, timestep_sequence
from .validate import check_eta, check_sigma_0


def sigma_0_from_sigma_y(sigma_y: float) -> float:
    """The measurement noise std in the model's [-1, 1] range from ``sigma_y`` in [0, 1] pixel
    units: ``2 * sigma_y``. The user-facing layer converts once; ``ddrm_sample`` takes sigma_0.

    >>> sigma_0_from_sigma_y(0.05)
    0.1
    """
    return 2.0 * float(sigma_y)


@torch.no_grad()
def ddrm_sample(
    model: Callable[..., torch.Tensor],
    y: torch.Tensor,
    degradation,
    sigma_0: float,
    *,
    steps: int = 20,
    eta: float = 0.85,
    eta_b: float = 1.0,
    classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    classes: torch.Tensor | None = None,
    classifier_scale: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
    betas: torch.Tensor | None = None,
    learned_sigma: bool | None = None,
    noise: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Restore images from ``y = H x + sigma_0 z`` with DDRM; returns ``x_hat`` ``[B, C, H, W]``.

    Args:
        model: the noise predictor, ``model(x_t, t)`` or, when ``classes`` is given,
            ``model(x_t, t, classes)``; ``t`` is a ``[B]`` tensor of the integer timestep (in x's
            dtype, as the reference passes it). An output with 2C channels (learned sigma, the
            OpenAI models) is cut to its first C; see ``learned_sigma``.
        y: the measurement ``[B, M]`` (as ``degradation.H`` returns it, or any shape with M
            entries per batch item), on the device and in the dtype everything runs in.
        degradation: an operator from :func:`make_degradation`, on y's device and dtype.
        sigma_0: the std of the noise in y, in the model's [-1, 1] range (2 x sigma_y; see
            :func:`sigma_0_from_sigma_y`). 0 for a noiseless measurement.
        steps: network evaluations, exactly; timesteps from :func:`timestep_sequence`.
        eta, eta_b: DDRM's eta (noise injected in the missing and less-noisy-than-y coordinates)
            and eta_b (weight of y where the target is noisier than y); both in [0, 1].
        classifier, classes, classifier_scale: guidance, ``classifier(x_t, t)`` returns logits;
            ``eps <- eps - sqrt(1 - abar_t) * scale * grad_{x_t} log softmax(logits)[classes]``,
            the gradient taken at the current ``x_t``.
        generator: the source of every random draw (see the module notes for their order).
        callback: called after each network evaluation with ``i`` (0-based), ``t``, ``sigma``
            (sigma_t), ``x_t`` (the model's input), ``x0`` (the prediction of x_0) and ``eps``
            (the noise prediction, guidance included), images ``[B, C, H, W]``.
        progress: a tqdm progress bar.
        betas: the training noise schedule; the configs' linear 1e-4..0.02 over 1000 by default
            (a run passes its config's, :func:`~ddrm_helpers.schedule.betas_from_config`).
        learned_sigma: whether the model appends C variance channels to its C noise channels
            (the config's ``model.learn_sigma``). True: its output must have 2C channels, the
            first C are used; False: it must have C; None: told from the output's shape.
        noise: where the standard normals come from instead of ``generator``: called with no
            argument before the loop and once per step, it returns ``[B, C, H, W]`` draws (the
            k-diffusion ``noise_sampler`` hook; the tests hand tiles the noise of their canvas).

    ``model`` may be any callable that behaves like the network on the whole image, such as
    :class:`~ddrm_helpers.tiles.TiledDenoiser`, which runs the network on overlapping tiles of its
    own size; ``classifier`` likewise (:class:`~ddrm_helpers.tiles.TiledClassifier`): one that has
    a ``log_prob_gradient(x, t, classes)`` method gives the guidance gradient itself.

    The output is not clipped (noiseless measurements are reproduced exactly: ``H x_hat = y``).

    >>> from ddrm_helpers import make_degradation
    >>> from ddrm_helpers.schedule import alphas_cumprod, linear_betas
    >>> abar = alphas_cumprod(linear_betas()).float()
    >>> def standard_normal_prior(x, t):  # the exact noise predictor when x_0 ~ N(0, I)
    ...     return (1 - abar[t.long()]).sqrt().view(-1, 1, 1, 1) * x
    >>> op = make_degradation("sr2", 8)
    >>> y = op.H(torch.rand(1, 3, 8, 8))
    >>> x_hat = ddrm_sample(standard_normal_prior, y, op, 0.0, steps=5, progress=False)
    >>> x_hat.shape, bool((op.H(x_hat) - y).abs().max() < 1e-5)
    (torch.Size([1, 3, 8, 8]), True)
    """
    _check(y, degradation, sigma_0, eta, eta_b, classifier, classes, generator)
    if noise is not None and not callable(noise):
        raise SamplingError(f"noise is a function returning standard normals [B, C, H, W]; got {noise!r}")
    if learned_sigma not in (None, True, False):
        raise SamplingError(f"learned_sigma={learned_sigma!r}: give True, False or None (told from the output)")
    batch = y.shape[0]
    image_shape = (batch, *degradation.image_shape)
    sigma_0 = float(sigma_0)
    device, dtype = y.device, y.dtype
    y = y.reshape(batch, -1)
    model = _network_for_sampling(model)

    if betas is None:
        betas = linear_betas()
    schedule = alphas_cumprod(betas.detach().to("cpu", torch.float64))
    abar = schedule.tolist() + [1.0]  # abar[-1]: "t = -1", after the last step, no noise
    times = timestep_sequence(steps, len(schedule))

    def sigma(t: int) -> float:
        return math.sqrt((1 - abar[t]) / abar[t])

    def normal() -> torch.Tensor:
        if noise is None:
            draw = torch.randn(image_shape, generator=generator, device=device, dtype=dtype)
        else:
            draw = noise()
            if not isinstance(draw, torch.Tensor) or tuple(draw.shape) != image_shape:
                raise SamplingError(f"noise() must return a tensor of shape {list(image_shape)} (standard normals "
                                    f"in the image's layout); got {getattr(draw, 'shape', type(draw).__name__)}")
        return degradation.Vt(draw.to(device=device, dtype=dtype))

    s = degradation.add_zeros(degradation.singulars()[None])[0]
    observed = s > s.max() * torch.finfo(dtype).eps ** 0.5
    s_inv = torch.where(observed, s, torch.inf).reciprocal()
    s = torch.where(observed, s, 0.0)
    uty = degradation.add_zeros(degradation.Ut(y))
    ybar = uty * s_inv
    y_noise_sq = (sigma_0 * s_inv) ** 2  # the noise variance of ybar, per coordinate
    inv_sigma_0 = 1 / sigma_0 if sigma_0 > 0 else 0.0  # with sigma_0 = 0 no coordinate is below y

    sigma_T = sigma(times[-1])
    trusted = observed & (s * sigma_T >= sigma_0)
    z = normal()
    xbar = torch.where(trusted, ybar + (sigma_T**2 - y_noise_sq).clamp_min(0).sqrt() * z, sigma_T * z)

    pairs = list(zip(reversed(times), reversed([-1, *times[:-1]])))
    for i, (t, t_next) in enumerate(tqdm(pairs, desc="DDRM", disable=not progress)):
        sigma_t, sigma_next = sigma(t), sigma(t_next)
        x_t = (math.sqrt(abar[t]) * degradation.V(xbar)).reshape(image_shape)
        t_batch = torch.full((batch,), float(t), device=device, dtype=dtype)
        eps = _predict_noise(model, x_t, t_batch, classes, learned_sigma)
        if classifier is not None:
            grad = _log_prob_gradient(classifier, x_t, t_batch, classes)
            eps = eps - math.sqrt(1 - abar[t]) * classifier_scale * grad
        epsbar = degradation.Vt(eps)
        # x_t / sqrt(abar_t) = x0 + sigma_t eps, so the prediction of x0 in the spectral domain
        # comes from the xbar we hold, without another transform.
        x0bar = xbar - sigma_t * epsbar
        if callback is not None:
            x0 = (x_t - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t])
            callback({"i": i, "t": t, "sigma": sigma_t, "x_t": x_t, "x0": x0, "eps": eps})

        below_y = observed & (s * sigma_next < sigma_0)  # the target is less noisy than y
        above_y = observed & ~below_y  # the target is as noisy as y or more: y enters (eta_b)
        direction = torch.where(below_y, (uty - s * x0bar) * inv_sigma_0, epsbar)
        mean = torch.where(
            above_y,
            eta_b * ybar + (1 - eta_b) * x0bar,
            x0bar + math.sqrt(1 - eta**2) * sigma_next * direction,
        )
        std = torch.where(
            above_y,
            (sigma_next**2 - eta_b**2 * y_noise_sq).clamp_min(0).sqrt(),
            torch.full_like(s, eta * sigma_next),
        )
        xbar = mean + std * normal()
    return degradation.V(xbar).reshape(image_shape)


def _predict_noise(model, x: torch.Tensor, t: torch.Tensor, classes, learned_sigma: bool | None) -> torch.Tensor:
    out = model(x, t) if classes is None else model(x, t, classes)
    channels = x.shape[1]
    doubled = out.dim() == x.dim() and out.shape[1] == 2 * channels and out.shape[2:] == x.shape[2:]
    if learned_sigma is False and doubled:
        raise SamplingError(
            f"the model returned {2 * channels} channels for x_t with {channels}, as a model with learned sigma "
            f"does (noise and variance), but learned_sigma=False (the config's model.learn_sigma is off); "
            f"the checkpoint and the config do not match"
        )
    if learned_sigma is True and not doubled:
        raise SamplingError(
            f"the model returned a tensor of shape {list(out.shape)} for x_t of shape {list(x.shape)}, but "
            f"learned_sigma=True (the config's model.learn_sigma): it should have {2 * channels} channels, "
            f"the noise then the variance; the checkpoint and the config do not match"
        )
    if doubled:
        out = out[:, :channels]  # learned-sigma models append the variance channels
    if out.shape != x.shape:
        raise SamplingError(
            f"the model returned a tensor of shape {list(out.shape)} for x_t of shape {list(x.shape)}; "
            f"DDRM needs the noise prediction, of x's shape (or with 2x{channels} channels, learned sigma)"
        )
    return out.to(x.dtype)


def _log_prob_gradient(classifier, x: torch.Tensor, t: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The guidance gradient: ``classifier.log_prob_gradient(x, t, classes)`` where the classifier
    gives its own (a tiled one blends its tiles'), else :func:`log_prob_gradient`."""
    own = getattr(classifier, "log_prob_gradient", None)
    if own is not None:
        return own(x, t, classes).to(x.dtype)
    return log_prob_gradient(classifier, x, t, classes)


def log_prob_gradient(classifier, x: torch.Tensor, t: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``grad_x sum_b log softmax(classifier(x, t))[b, classes[b]]`` at ``x``.

    Outside inference mode, also when called inside it: the inputs are copied to ordinary tensors
    there (an inference tensor cannot be saved for the backward pass). The backward's convolutions
    run under the same cuDNN settings as the forward's (:func:`~ddrm_helpers.models.fastpath.cudnn_scope`).
    """
    with torch.inference_mode(False), torch.enable_grad(), cudnn_scope(x):
        x_in, t, classes = (v.clone() if v.is_inference() else v for v in (x.detach(), t, classes))
        x_in.requires_grad_(True)
        log_probs = torch.log_softmax(classifier(x_in, t), dim=-1)
        chosen = log_probs.gather(1, classes.reshape(-1, 1)).sum()
        return torch.autograd.grad(chosen, x_in)[0].to(x.dtype)


def _compile(model, mode: str):
    """``torch.compile`` as the sampler uses it (a name of its own, so that tests can stand in for it)."""
    return torch.compile(model, mode=mode, dynamic=False)


def _network_for_sampling(model):
    """``model``, or its compiled form when the fast-path switch ``compile_mode`` is set. A wrapper
    that holds a network (``map_network``, such as a tiled one) gets its network compiled inside."""
    mode = fast_path().compile_mode
    if mode is None:
        return model
    if hasattr(model, "map_network"):
        return model.map_network(_network_for_sampling)
    return _CompiledNetwork(model, mode)


class _CompiledNetwork:
    """``model`` through :func:`_compile` (made once per model and mode, kept in the model's
    ``__dict__``, so that it goes when the model goes).

    Each call marks a new CUDA-graph step, lays the weights out (channels-last) eagerly before the
    first compiled call (the compiled code does not change the weights), runs under the network's
    cuDNN settings, and returns a copy of the output: with CUDA graphs, the output's memory is reused
    by the next replay. (To pickle or deep-copy a model that was compiled here, ``del
    model._ddrm_compiled`` first.)
    """

    def __init__(self, model, mode: str):
        self.model = model
        cache = getattr(model, "__dict__", None)
        compiled = cache.setdefault("_ddrm_compiled", {}) if cache is not None else {}
        if mode not in compiled:
            compiled[mode] = _compile(model, mode)
        self.compiled = compiled[mode]
        modules = model.modules() if isinstance(model, nn.Module) else ()
        self.first_conv = next((m for m in modules if isinstance(m, nn.Conv2d)), None)

    def __call__(self, x: torch.Tensor, *rest) -> torch.Tensor:
        if self.first_conv is not None:
            x = prepare_input(self.model, self.first_conv, x)
        torch.compiler.cudagraph_mark_step_begin()
        with cudnn_scope(x):
            return self.compiled(x, *rest).clone()


def _check(y, degradation, sigma_0, eta, eta_b, classifier, classes, generator) -> None:
    if not isinstance(y, torch.Tensor) or y.dim() < 2 or not y.is_floating_point():
        raise SamplingError(
            f"y must be a floating-point tensor [B, M] (a batch of measurements); got "
            f"{type(y).__name__} {list(y.shape) if isinstance(y, torch.Tensor) else ''}".rstrip()
        )
    if y[0].numel() != degradation.measurement_dim:
        raise SamplingError(
            f"y has {y[0].numel()} entries per image, but {degradation.name} measures "
            f"{degradation.measurement_dim}; pass y = degradation.H(x) (+ noise) of this degradation"
        )
    s = degradation.singulars()
    if s.device != y.device or s.dtype != y.dtype:
        raise SamplingError(
            f"the degradation is on {s.device} in {s.dtype} but y is on {y.device} in {y.dtype}; "
            "move it with degradation.to(y.device, y.dtype)"
        )
    check_sigma_0(sigma_0)
    check_eta(eta, "eta")
    check_eta(eta_b, "eta_b")
    if classifier is not None and classes is None:
        raise SamplingError("classifier guidance needs classes: a [B] tensor of class indices")
    if classes is not None and (classes.shape != (y.shape[0],) or classes.device != y.device):
        raise SamplingError(
            f"classes must be a [{y.shape[0]}] tensor of class indices on {y.device}; "
            f"got shape {list(classes.shape)} on {classes.device}"
        )
    if generator is not None and torch.device(generator.device).type != y.device.type:
        raise SamplingError(
            f"the generator is on {generator.device} but y is on {y.device}; make it with "
            f"torch.Generator(device=y.device).manual_seed(seed)"
        )
