"""The three pretrained networks: architectures, and loading their checkpoints.

- ``ddpm``            the DDPM UNet of CelebA-HQ (config ``model.type: simple``)
- ``adm_unet``        OpenAI's guided-diffusion UNet of ImageNet (``model.type: openai``)
- ``adm_classifier``  OpenAI's noisy ImageNet classifier (config section ``classifier``)
- ``adm_blocks``      the blocks those two share; ``layers`` what all three share
- ``build``           ``build_model(config)``, ``build_classifier(config)``
- ``pretrained``      ``load_pretrained(config)``: the networks with their verified official weights
"""

from .adm_classifier import ADMClassifier
from .adm_unet import ADMUNet
from .build import build_classifier, build_model
from .ddpm import DDPMUNet
from .pretrained import Pretrained, clear_pretrained_cache, load_pretrained

__all__ = [
    "ADMClassifier",
    "ADMUNet",
    "DDPMUNet",
    "Pretrained",
    "build_classifier",
    "build_model",
    "clear_pretrained_cache",
    "load_pretrained",
]
