"""The networks, from a config: :func:`build_model` and :func:`build_classifier`.

The config sections are the reference DDRM ones: ``model`` with ``type: simple`` (the DDPM UNet,
keys ``ch``, ``ch_mult``, ...) or ``type: openai`` (the guided-diffusion UNet, keys as
guided-diffusion's ``create_model`` arguments), and ``classifier`` (keys as guided-diffusion's
``create_classifier`` arguments). Weights are left at PyTorch's default initialisation: the
networks are for loading checkpoints into (see :func:`~ddrm_helpers.models.load_pretrained`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..config import Config
from ..errors import ConfigError
from .adm_blocks import HeadSpec, TorsoSpec
from .adm_classifier import ADMClassifier
from .adm_unet import ADMUNet
from .ddpm import DDPMUNet
from .layers import NUM_GROUPS

NUM_IMAGENET_CLASSES = 1000
CLASSIFIER_HEAD_CHANNELS = 64  # fixed in guided-diffusion's create_classifier, not a config key

# guided-diffusion's channel multipliers by image size, used where a config gives none
ADM_CHANNEL_MULT = {
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
    256: (1, 1, 2, 2, 4, 4),
    512: (0.5, 1, 1, 2, 2, 4, 4),
}
_REQUIRED = object()


def build_model(config: Config) -> nn.Module:
    """The diffusion network of ``config`` (section ``model``), with untrained weights.

    ``type: simple`` gives a :class:`~.ddpm.DDPMUNet` (``model(x, t)``), ``type: openai`` an
    :class:`~.adm_unet.ADMUNet` (``model(x, t)``, or ``model(x, t, y)`` when ``class_cond``).
    Build on the ``meta`` device (``with torch.device("meta"): build_model(cfg)``) to get the
    structure without allocating the weights.

    >>> from ddrm_helpers import load_config
    >>> model = build_model(load_config("imagenet_256", **{"model.num_channels": 32}))
    >>> type(model).__name__, model.out[2].out_channels
    ('ADMUNet', 6)
    """
    section = _section(config, "model")
    kind = _get(config, section, "model", "type")
    if kind == "simple":
        return _build_ddpm(config, section)
    if kind == "openai":
        return _build_adm_unet(config, section)
    raise ConfigError(
        f"config {_name(config)}: model.type is {kind!r}; the models are 'simple' (the DDPM UNet "
        "of CelebA-HQ) and 'openai' (the guided-diffusion UNet of ImageNet)"
    )


def build_classifier(config: Config) -> ADMClassifier:
    """The noisy classifier of ``config`` (section ``classifier``), with untrained weights.

    ``classifier(x, t) -> logits`` over the 1000 ImageNet classes. Only the class-conditional
    config ``imagenet_256_cc`` has a classifier; for the others this raises ``ConfigError``.
    """
    if "classifier" not in config:
        raise ConfigError(
            f"config {_name(config)} has no classifier section; only imagenet_256_cc uses one"
        )
    section = config["classifier"]

    def get(key: str, default: Any = _REQUIRED) -> Any:
        return _get(config, section, "classifier", key, default)

    pool = get("classifier_pool", "attention")
    if pool != "attention":
        raise ConfigError(
            f"config {_name(config)}: classifier.classifier_pool is {pool!r}; only 'attention' "
            "(the pooling of the released classifiers) is implemented"
        )
    image_size = get("image_size")
    width, channel_mult = get("classifier_width"), _adm_channel_mult(config, image_size, "")
    _check_widths(config, "classifier.classifier_width", width, channel_mult)
    spec = TorsoSpec(
        model_channels=width,
        channel_mult=channel_mult,
        num_res_blocks=get("classifier_depth"),
        attention_ds=_attention_ds(config, image_size, get("classifier_attention_resolutions")),
        heads=HeadSpec(head_channels=CLASSIFIER_HEAD_CHANNELS),
        use_scale_shift_norm=get("classifier_use_scale_shift_norm"),
        resblock_updown=get("classifier_resblock_updown"),
    )
    return ADMClassifier(
        spec,
        image_size=image_size,
        num_classes=NUM_IMAGENET_CLASSES,
        pool_head_channels=CLASSIFIER_HEAD_CHANNELS,
    )


def _build_ddpm(config: Config, section: Mapping) -> DDPMUNet:
    def get(key: str, default: Any = _REQUIRED) -> Any:
        return _get(config, section, "model", key, default)

    data = _section(config, "data")
    _check_widths(config, "model.ch", get("ch"), get("ch_mult"))
    return DDPMUNet(
        resolution=_get(config, data, "data", "image_size"),
        in_channels=get("in_channels", 3),
        out_channels=get("out_ch", 3),
        ch=get("ch"),
        ch_mult=tuple(get("ch_mult")),
        num_res_blocks=get("num_res_blocks"),
        attn_resolutions=tuple(get("attn_resolutions")),
        dropout=get("dropout", 0.0),
        resamp_with_conv=get("resamp_with_conv", True),
    )


def _build_adm_unet(config: Config, section: Mapping) -> ADMUNet:
    def get(key: str, default: Any = _REQUIRED) -> Any:
        return _get(config, section, "model", key, default)

    image_size = get("image_size")
    legacy_order = not get("use_new_attention_order", False)
    head_channels = get("num_head_channels", -1)
    num_heads = get("num_heads", 1)
    num_heads_upsample = get("num_heads_upsample", -1)
    width = get("num_channels")
    channel_mult = _adm_channel_mult(config, image_size, get("channel_mult", ""))
    _check_widths(config, "model.num_channels", width, channel_mult)
    spec = TorsoSpec(
        model_channels=width,
        channel_mult=channel_mult,
        num_res_blocks=get("num_res_blocks"),
        attention_ds=_attention_ds(config, image_size, get("attention_resolutions")),
        heads=HeadSpec(num_heads, head_channels, legacy_order),
        dropout=get("dropout", 0.0),
        use_scale_shift_norm=get("use_scale_shift_norm", True),
        resblock_updown=get("resblock_updown", False),
        conv_resample=get("resamp_with_conv", True),
    )
    out_channels = get("out_channels", 3)
    return ADMUNet(
        spec,
        in_channels=get("in_channels", 3),
        out_channels=2 * out_channels if get("learn_sigma", False) else out_channels,
        num_classes=NUM_IMAGENET_CLASSES if get("class_cond", False) else None,
        decoder_heads=HeadSpec(
            num_heads if num_heads_upsample == -1 else num_heads_upsample, head_channels, legacy_order
        ),
    )


def _check_widths(config: Config, key: str, width: int, channel_mult) -> None:
    """Every level's channel count must split into the 32 groups of the group norms."""
    uneven = sorted({int(m * width) for m in channel_mult if int(m * width) % NUM_GROUPS})
    if uneven:
        raise ConfigError(
            f"config {_name(config)}: {key} = {width} gives levels of {', '.join(map(str, uneven))} "
            f"channels, which group normalisation cannot split into {NUM_GROUPS} groups; use a "
            f"multiple of {NUM_GROUPS} (for example 32 for a tiny test model)"
        )


def _adm_channel_mult(config: Config, image_size: int, given: str | list) -> tuple[float, ...]:
    if given not in ("", None):
        values = given.split(",") if isinstance(given, str) else given
        return tuple(int(v) for v in values)
    if image_size not in ADM_CHANNEL_MULT:
        raise ConfigError(
            f"config {_name(config)}: no channel multipliers are known for image_size {image_size} "
            f"(known: {', '.join(map(str, ADM_CHANNEL_MULT))}); give channel_mult, e.g. '1,1,2,2,4,4'"
        )
    return ADM_CHANNEL_MULT[image_size]


def _attention_ds(config: Config, image_size: int, resolutions: str | list) -> tuple[int, ...]:
    """Attention resolutions (sides in pixels, "32,16,8") as downsampling rates (8, 16, 32 at 256)."""
    values = resolutions.split(",") if isinstance(resolutions, str) else resolutions
    try:
        sides = [int(v) for v in values]
    except ValueError:
        raise ConfigError(
            f"config {_name(config)}: attention resolutions must be sides in pixels such as "
            f"'32,16,8'; got {resolutions!r}"
        ) from None
    return tuple(image_size // side for side in sides)


def _section(config: Config, name: str) -> Mapping:
    if name not in config:
        raise ConfigError(f"config {_name(config)} has no '{name}' section")
    return config[name]


def _get(config: Config, section: Mapping, where: str, key: str, default: Any = _REQUIRED) -> Any:
    if key in section:
        return section[key]
    if default is _REQUIRED:
        raise ConfigError(
            f"config {_name(config)}: '{where}.{key}' is missing; it is needed to build the network "
            "(see configs/ for the reference values)"
        )
    return default


def _name(config: Config) -> str:
    return str(config.get("name", "config"))
