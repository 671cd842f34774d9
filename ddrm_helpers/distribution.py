"""KID and FID of an evaluation: the restored images against the originals, over every rank.

KID and FID come from ``torchmetrics`` over all the images evaluated (every rank's, and those of
earlier runs, read back from ``restored/``), with torchmetrics' Inception-v3
(``features="inception"``, which needs ``torch-fidelity`` and its weights file; docs/evaluation.md)
or any network given as ``features`` (``uint8`` images ``[N, 3, H, W]`` in, ``[N, D]`` features
out). Without them the evaluation still gives PSNR and SSIM, and says in one line why KID is missing.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .datasets import DataSet
from .images import load_image, to_uint8
from .ranks import Ranks

FEATURE_BLOCK = 32  # images per feature-network call
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000  # the usual size (and torchmetrics' default); all the images when there are fewer


def distribution_metrics(data_set: DataSet, indices: list[int], size: int, run_folder, features, weights,
                         ranks: Ranks, device: torch.device, seed: int) -> dict:
    """KID (x 1e3, the mean and standard deviation over subsets) and FID of the restored images of
    ``indices`` (those with a record, in order) against their originals, every rank computing the
    features of its share and torchmetrics gathering them; or a ``note`` saying in one line why not.
    ``run_folder`` (:class:`~ddrm_helpers.runfolder.RunFolder`) reads the restorations back. Called
    by every rank."""
    count = len(indices)
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
    mine = [indices[b * FEATURE_BLOCK:(b + 1) * FEATURE_BLOCK] if b < blocks else []
            for b in range(ranks.rank, math.ceil(blocks / ranks.world) * ranks.world, ranks.world)]
    if why is None:
        missing = [i for block in mine for i in block if not run_folder.has_restored(i)]
        if missing:
            why = (f"KID/FID not computed: {len(missing)} restored image(s) are missing from "
                   f"{run_folder.restored.path} (image {missing[0]}, ...)")
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
        fake = _uint8_batch([run_folder.read_restored(i) for i in block], size).to(device)
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
