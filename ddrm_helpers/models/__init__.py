"""The three pretrained networks: architectures, and loading their checkpoints.

- ``ddpm``            the DDPM UNet of CelebA-HQ (config ``model.type: simple``)
- ``adm_unet``        OpenAI's guided-diffusion UNet of ImageNet (``model.type: openai``)
- ``adm_classifier``  OpenAI's noisy ImageNet classifier (config section ``classifier``)
- ``adm_blocks``      the blocks those two share; ``layers`` what all three share
- ``build``           ``build_model(config)``, ``build_classifier(config)``
- ``pretrained``      ``load_pretrained(config)``: the networks with their verified official weights
- ``fastpath``        the GPU fast-path switches: ``fast_path()``, ``set_fast_path(...)``,
                      ``fast_path_options(...)`` (channels-last, cuDNN benchmark, half-precision
                      group norm, ``torch.compile`` in the sampler)
"""

from .adm_classifier import ADMClassifier
from .adm_unet import ADMUNet
from .build import build_classifier, build_model
from .ddpm import DDPMUNet
from .fastpath import FastPath, fast_path, fast_path_options, set_fast_path
from .pretrained import Pretrained, clear_pretrained_cache, load_pretrained

__all__ = [
    "ADMClassifier",
    "ADMUNet",
    "DDPMUNet",
    "FastPath",
    "Pretrained",
    "build_classifier",
    "build_model",
    "clear_pretrained_cache",
    "fast_path",
    "fast_path_options",
    "load_pretrained",
    "set_fast_path",
]
