"""DeepLabV3-ResNet50 for Cityscapes: torchvision's own model, built with a choice of output stride and
of starting weights (ImageNet backbone, COCO segmentation model, random, or a checkpoint of ours).

The model is torchvision's :class:`~torchvision.models.segmentation.DeepLabV3` assembled exactly the way
``torchvision.models.segmentation.deeplabv3_resnet50`` assembles it (``_deeplabv3_resnet``), so the
state-dict keys are torchvision's and torchvision's pretrained files load into it. Two differences:
torchvision's builder hard-codes output stride 8; here the stride is a choice (16 costs about a third of
the compute, for CPU demos). Dilation does not change any parameter shape, so every weight file loads
into both strides. And a random start sets each residual block's last BatchNorm scale to zero
(``zero_init_residual``); pretrained weights overwrite those scales, so only runs without them are affected.

Pretrained files come through torchvision's weights API and torch.hub's cache
(``torch.hub.get_dir()/checkpoints/<file name of the url>``): a machine that downloaded them once works
offline. Without the file and without network, :class:`WeightsUnavailableError` says within seconds which
file to put where.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import ResNet50_Weights, resnet50
from torchvision.models._api import WeightsEnum
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import DeepLabV3, DeepLabV3_ResNet50_Weights
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from .checkpoint import CheckpointError, load_checkpoint_state
from .classes import ClassTable
from .model_info import ModelInfo, checkpoint_classes

__all__ = [
    "WeightsUnavailableError",
    "CheckpointError",
    "WEIGHT_NAMES",
    "OUTPUT_STRIDES",
    "IMAGENET_WEIGHTS",
    "COCO_WEIGHTS",
    "build_model",
    "replace_heads",
    "load_checkpoint_state",
    "model_from_state",
    "load_weights",
    "fine_tune_from",
    "weights_cache_file",
    "weights_source",
    "count_parameters",
    "count_flops",
]

# What torchvision's deeplabv3_resnet50 uses as `weights_backbone` (V1, not the DEFAULT V2 recipe).
IMAGENET_WEIGHTS: ResNet50_Weights = ResNet50_Weights.IMAGENET1K_V1
# Trained on the COCO images that hold the 20 Pascal VOC categories: 21 outputs (with background).
COCO_WEIGHTS: DeepLabV3_ResNet50_Weights = DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
COCO_NUM_CLASSES = len(COCO_WEIGHTS.meta["categories"])  # 21

WEIGHT_NAMES = ("imagenet", "coco", "none")

# output stride -> (ResNet replace_stride_with_dilation for layer2..layer4, ASPP atrous rates).
# The rates double when the feature map doubles, so the ASPP sees the same image-space context.
OUTPUT_STRIDES: dict[int, tuple[list[bool], tuple[int, int, int]]] = {
    8: ([False, True, True], (12, 24, 36)),  # torchvision's default and the published recipe
    16: ([False, False, True], (6, 12, 18)),  # DeepLabV3 paper's training stride; ~1/3 of the FLOPs
}

# Seconds we wait to learn whether the download host answers before declaring the machine offline.
_PROBE_TIMEOUT_S = 3.0


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in torch.hub's cache nor downloadable; the message says which file
    to put in which folder. Notebooks catch it and continue with random init."""


# ----------------------------------------------------------------------------------------------------
# Building


def _deeplabv3_resnet50(num_classes: int, aux_loss: bool, output_stride: int) -> DeepLabV3:
    """Return a randomly initialised DeepLabV3-ResNet50 laid out like torchvision's ``_deeplabv3_resnet``.

    One choice differs from torchvision's random init: ``zero_init_residual=True`` (torchvision's own option)
    sets the last BatchNorm scale of every block's residual branch to zero, so each branch starts at zero: 12
    of the 16 blocks start as the identity, the first of each stage as its 1x1 convolution + BatchNorm
    shortcut (random), and the untrained network is, in effect, shallow: the trick of Goyal et al. 2017
    (arXiv:1706.02677) and He et al. 2019 ("Bag of Tricks", arXiv:1812.01187). From random weights on the
    demo's CPU budget it ended 2.8 points higher at 250 iterations (30.1% -> 32.9% val mIoU) and had 31.0%
    at 125, where the torchvision start had 12.0% at 100 and 20.3% at 150 (runs G and H of
    docs/demo-options.md). Pretrained weights overwrite these values, so only runs without them see a
    difference.
    """
    backbone = resnet50(weights=None, replace_stride_with_dilation=OUTPUT_STRIDES[output_stride][0],
                        zero_init_residual=True)
    return _assemble(backbone, num_classes, aux_loss, output_stride)


def _assemble(backbone: nn.Module, num_classes: int, aux_loss: bool, output_stride: int) -> DeepLabV3:
    """Return DeepLabV3 around a (possibly pretrained) ResNet-50, with fresh heads; its record (``model.info``) says
    what it is: the class count's table (``engine.train`` and ``load_model`` put in the data's)."""
    # Same return-layer names and head classes as torchvision, so the state-dict keys are identical.
    return_layers = {"layer4": "out"}
    if aux_loss:
        return_layers["layer3"] = "aux"
    features = IntermediateLayerGetter(backbone, return_layers=return_layers)
    aux_classifier = FCNHead(1024, num_classes) if aux_loss else None
    classifier = DeepLabHead(2048, num_classes, atrous_rates=OUTPUT_STRIDES[output_stride][1])
    model = DeepLabV3(features, classifier, aux_classifier)
    model.info = ModelInfo.untrained(num_classes, output_stride)
    return model


def replace_heads(model: DeepLabV3, num_classes: int) -> DeepLabV3:
    """Return ``model`` with the last 1x1 conv of the classifier (and aux classifier) made fresh for
    ``num_classes``; everything before it (ASPP, FCN 3x3 conv) keeps its weights."""
    # DeepLabHead = [ASPP, conv3x3, BN, ReLU, conv1x1 -> classes]
    # FCNHead     = [conv3x3, BN, ReLU, Dropout, conv1x1 -> classes]
    # In both the class scores come from index 4; only that layer depends on the label set.
    old = model.classifier[4]
    model.classifier[4] = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    if model.aux_classifier is not None:
        old = model.aux_classifier[4]
        model.aux_classifier[4] = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    model.info = ModelInfo.untrained(num_classes, model.info.output_stride)
    return model


def build_model(
    num_classes: int = 19,
    weights: str | Path | None = "imagenet",
    aux_loss: bool = True,
    output_stride: int = 8,
    progress: bool = False,
) -> DeepLabV3:
    """Return torchvision's DeepLabV3-ResNet50 with ``num_classes`` outputs, starting from ``weights``.

    ``weights``:
      * ``"imagenet"``: the ResNet-50 backbone torchvision's deeplabv3 uses (ResNet50_Weights.IMAGENET1K_V1),
        ASPP and heads random.
      * ``"coco"``: DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1 (backbone, ASPP and heads trained for
        21 VOC classes); the last conv of both heads is then replaced for ``num_classes``. With
        ``num_classes=21`` the VOC heads are kept (to look at what the COCO model sees).
      * ``None`` / ``"none"``: random init (torchvision's, with every block's residual branch starting at zero:
        ``zero_init_residual``).
      * a path: a checkpoint written by this project (a state dict, or a dict whose "model" is one).

    ``output_stride`` 8 (torchvision's and the published recipe's) or 16 (dilation in layer4 only, ASPP
    rates 6/12/18, about a third of the compute). ``aux_loss`` adds the FCN head on layer3 ("aux" output).

    Raises WeightsUnavailableError when pretrained files are not cached and cannot be downloaded,
    CheckpointError / FileNotFoundError for a checkpoint that cannot be used, ValueError for bad arguments.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {sorted(OUTPUT_STRIDES)}, got {output_stride!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    dilation = OUTPUT_STRIDES[output_stride][0]
    name = weights.lower() if isinstance(weights, str) else weights

    if name is None or name == "none":
        return _deeplabv3_resnet50(num_classes, aux_loss, output_stride)

    if name == "imagenet":
        backbone = resnet50(weights=None, replace_stride_with_dilation=dilation)
        # resnet50(weights=...) would do the same load, but without our offline check and clear errors.
        _load_into(backbone, _pretrained_state_dict(IMAGENET_WEIGHTS, progress), IMAGENET_WEIGHTS)
        return _assemble(backbone, num_classes, aux_loss, output_stride)

    if name == "coco":
        state = _pretrained_state_dict(COCO_WEIGHTS, progress)
        # torchvision refuses COCO weights with num_classes != 21 (trap 9): build the 21-class model the
        # file was trained as, load it whole, then swap the class layers for ours.
        model = _deeplabv3_resnet50(COCO_NUM_CLASSES, True, output_stride)
        _load_into(model, state, COCO_WEIGHTS)
        if not aux_loss:
            model.aux_classifier = None  # the aux head only helps training; drop it rather than keep dead weights
        if num_classes != COCO_NUM_CLASSES:
            replace_heads(model, num_classes)
        return model

    return _from_checkpoint(Path(weights), num_classes, aux_loss, output_stride)


# ----------------------------------------------------------------------------------------------------
# Pretrained files: torch.hub's cache, offline-friendly


def weights_cache_file(weights: WeightsEnum) -> Path:
    """Return where torch.hub keeps (or would keep) the file of ``weights``: <hub dir>/checkpoints/<name>."""
    # The same rule as torch.hub.load_state_dict_from_url; get_dir() follows TORCH_HOME at call time.
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def weights_source(weights: str | Path | None) -> str:
    """Return what a run that names ``weights`` will start from, in a few words, as ``build_model`` would find it.

    "imagenet" when its file is in torch.hub's cache, "imagenet (not in the cache: downloaded first)" when the
    host answers, "imagenet (not in the cache, offline: random)" when neither (the engine then trains from random
    weights, and says so); "none (random)"; a checkpoint's path as given.
    """
    if weights is None or str(weights).lower() == "none":
        return "none (random)"
    name = str(weights).lower()
    if name not in WEIGHT_NAMES:
        return str(weights)
    where = _file_source(IMAGENET_WEIGHTS if name == "imagenet" else COCO_WEIGHTS)
    return {"cache": name, "download": f"{name} (not in the cache: downloaded first)",
            "none": f"{name} (not in the cache, offline: random)"}[where]


def _file_source(weights: WeightsEnum) -> str:
    """Return where the file of ``weights`` comes from: "cache", "download" (not cached, its host answers) or "none"."""
    if weights_cache_file(weights).exists():
        return "cache"
    return "download" if _host_reachable(weights.url) else "none"


def _home_relative(path: Path) -> str:
    """Return the path with the home folder written as ~, as people write it (and so notebooks show no user)."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _host_reachable(url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Return whether a TCP connection to the url's host opens within ``timeout`` seconds."""
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # A thread, because name resolution ignores socket timeouts and can hang far longer on a dead network.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _pretrained_state_dict(weights: WeightsEnum, progress: bool) -> dict[str, torch.Tensor]:
    """Return the state dict of torchvision ``weights``, from the cache or (if reachable) downloaded."""
    cached = weights_cache_file(weights)
    where = f"put {cached.name} (from {weights.url}) in {_home_relative(cached.parent)}/"
    source = _file_source(weights)
    if source != "cache":
        if source == "none":
            raise WeightsUnavailableError(
                f"{weights!r} not available: {cached.name} is not cached and "
                f"{urlparse(weights.url).hostname} cannot be reached; {where}"
            )
        try:
            return weights.get_state_dict(progress=progress, check_hash=True, map_location="cpu",
                                          weights_only=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; a hash mismatch a RuntimeError
            raise WeightsUnavailableError(f"{weights!r}: download failed ({err}); {where}") from err
    try:
        return weights.get_state_dict(progress=progress, check_hash=True, map_location="cpu", weights_only=True)
    except Exception as err:  # garbage bytes surface as anything from EOFError to KeyError in the unpickler
        # A truncated download is the usual cause; torch.hub never re-checks the hash of a cached file.
        raise WeightsUnavailableError(
            f"{weights!r}: cached file {_home_relative(cached)} is unreadable ({type(err).__name__}); delete it and "
            f"download {weights.url} again"
        ) from err


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], weights: WeightsEnum) -> None:
    """Load a torchvision weights file into ``module``; a file of the wrong model is one clear line."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise WeightsUnavailableError(
            f"{weights!r}: cached file {_home_relative(weights_cache_file(weights))}"
            f" does not hold the weights of that model "
            f"({_describe_mismatch(module, state)}); delete it and download {weights.url} again"
        ) from err


# ----------------------------------------------------------------------------------------------------
# Checkpoints written by this project


def _from_checkpoint(path: Path, num_classes: int, aux_loss: bool, output_stride: int) -> DeepLabV3:
    """Return the model of a checkpoint of this project, checked against the requested class count; its record
    (``model.info``) is the checkpoint's, at the output stride asked for."""
    state, meta = load_checkpoint_state(path)
    model = model_from_state(state, path, num_classes, aux_loss, output_stride)
    model.info = dataclasses.replace(ModelInfo.from_checkpoint(meta, state, path), output_stride=output_stride)
    return model


def fine_tune_from(path: str | Path, table: ClassTable, aux_loss: bool = True, output_stride: int = 8
                   ) -> tuple[DeepLabV3, str]:
    """Return a model for the classes of ``table`` starting from a checkpoint of this project, and one line saying
    what was loaded, replaced and kept by name.

    The backbone, ASPP and the heads' convolutions (everything but the two 1x1 class layers) are loaded. When the
    checkpoint's class names differ (in name or order), the classifier's and aux classifier's last conv are replaced
    (``replace_heads``), and a class whose name is also one of the checkpoint's keeps that class's weights (its row
    of the 1x1 conv, and its bias).
    """
    state, meta = load_checkpoint_state(path)
    old = ModelInfo.from_checkpoint(meta, state, path).classes
    has_aux = any(k.startswith("aux_classifier.") for k in state)
    model = model_from_state(state, path, len(old), aux_loss=aux_loss and has_aux, output_stride=output_stride)
    model.info = ModelInfo(table, output_stride=output_stride)  # the classes it is trained for from here on
    if aux_loss and not has_aux:
        model.aux_classifier = FCNHead(1024, len(old))
    name = Path(path).name
    if old.names == table.names:  # the same classes in the same order: colours and the ignore value are not weights
        return model, f"{name}: every weight loaded (same {len(table)} classes)" + \
            (", aux head new" if aux_loss and not has_aux else "")
    heads = [(model.classifier, "classifier")] + ([(model.aux_classifier, "aux")] if aux_loss else [])
    kept_rows = [(head[4].weight.detach().clone(), head[4].bias.detach().clone()) for head, _ in heads]
    replace_heads(model, len(table))
    kept = [n for n in table.names if n in old.names]
    with torch.no_grad():
        for (head, _), (weight, bias) in zip(heads, kept_rows):
            for n in kept:
                head[4].weight[table.names.index(n)] = weight[old.names.index(n)]
                head[4].bias[table.names.index(n)] = bias[old.names.index(n)]
    new = [n for n in table.names if n not in old.names]
    return model, (f"{name}: all but the class layers loaded (backbone, ASPP, head convs); class layer of the "
                   f"classifier{' and aux classifier' * aux_loss} replaced ({len(old)} classes -> {len(table)}); "
                   f"kept by name: {', '.join(kept) or 'none'}; new: {', '.join(new) or 'none'}")


def model_from_state(state: dict[str, torch.Tensor], source: str | Path, num_classes: int | None = None,
                     aux_loss: bool = True, output_stride: int = 8) -> DeepLabV3:
    """Return DeepLabV3-ResNet50 holding ``state`` (a state dict read from ``source``, which errors name).

    ``num_classes`` None: the checkpoint's own. ``aux_loss=False`` drops an aux head the state may hold.
    """
    head_classes = checkpoint_classes(state, source)
    num_classes = head_classes if num_classes is None else num_classes
    if head_classes != num_classes:
        raise CheckpointError(
            f"checkpoint {source} was trained for {head_classes} classes, {num_classes} were asked for"
        )
    has_aux = any(k.startswith("aux_classifier.") for k in state)
    if aux_loss and not has_aux:
        raise CheckpointError(f"checkpoint {source} has no aux_classifier: build it with aux_loss=False")
    model = _deeplabv3_resnet50(num_classes, aux_loss, output_stride)
    load_weights(model, state, source)
    return model


def load_weights(model: DeepLabV3, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a state dict read from ``source`` into ``model``; a mismatch is one CheckpointError line naming the
    file. A model built without the aux head takes a state that has one (the head is simply not used)."""
    if getattr(model, "aux_classifier", None) is None:
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {source} does not fit this DeepLabV3-ResNet50 ({_describe_mismatch(model, state)})"
        ) from err


def _describe_mismatch(module: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Return a short summary of how ``state`` differs from ``module.state_dict()`` (keys and shapes)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            parts.append(f"{len(keys)} {label} keys, e.g. {keys[0]}")
    return "; ".join(parts) or "state dict does not load"


# ----------------------------------------------------------------------------------------------------
# Size and cost


def count_parameters(model: DeepLabV3) -> dict[str, int]:
    """Return the number of parameters by part: backbone, classifier (ASPP head), aux_classifier, total."""
    def count(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    counts = {
        "backbone": count(model.backbone),
        "classifier": count(model.classifier),
        "aux_classifier": count(model.aux_classifier),
    }
    counts["total"] = count(model)
    return counts


def count_flops(model: nn.Module, size: tuple[int, int] = (512, 1024)) -> int:
    """Return the FLOPs (a multiply-add counts 2) of one forward pass of one image of ``size`` (H, W).

    Counts what the model runs in eval mode, the aux head included when the model has one (torchvision runs
    it in eval mode too; build with aux_loss=False for inference cost). Runs on a copy on the "meta" device:
    shapes only, no arithmetic, so even 1024x2048 takes well under a second and no memory.
    """
    # Pre-seed deepcopy's memo with meta stand-ins so no parameter or buffer is ever copied (GPU models too).
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        stand_in = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(stand_in, tensor.requires_grad) if isinstance(tensor, nn.Parameter) \
            else stand_in
    meta_model = copy.deepcopy(model, memo).eval()
    image = torch.zeros(1, 3, *size, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta_model(image)
    return int(counter.get_total_flops())
