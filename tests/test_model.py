"""seg_utils.model: torchvision's DeepLabV3-ResNet50 at output stride 8 or 16, pretrained files read from
torch.hub's cache with no network, and this project's checkpoints loaded safely."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50
from torchvision.models.segmentation import deeplabv3_resnet50

from seg_utils.model import (
    COCO_WEIGHTS,
    IMAGENET_WEIGHTS,
    CheckpointError,
    WeightsUnavailableError,
    _host_reachable,
    build_model,
    count_flops,
    count_parameters,
    load_checkpoint_state,
    weights_cache_file,
    weights_source,
)

torch.set_num_threads(2)


@pytest.fixture()
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TORCH_HOME, so torch.hub's cache is tmp_path/hub/checkpoints and starts empty."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _forward(model: torch.nn.Module, size: tuple[int, int] = (64, 128)) -> dict[str, torch.Tensor]:
    # eval: with a batch of one, train-mode BatchNorm refuses ASPP's 1x1 pooled branch
    model.eval()
    with torch.no_grad():
        return model(torch.randn(1, 3, *size))


@pytest.mark.parametrize("num_classes", [19, 34])
def test_output_shapes_at_input_resolution(num_classes: int) -> None:
    model = build_model(num_classes, weights=None, output_stride=16)
    out = _forward(model)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == (1, num_classes, 64, 128)
    assert out["aux"].shape == (1, num_classes, 64, 128)


def test_output_stride_8_and_no_aux() -> None:
    model = build_model(19, weights=None, aux_loss=False, output_stride=8)
    assert model.aux_classifier is None
    out = _forward(model)
    assert set(out) == {"out"} and out["out"].shape == (1, 19, 64, 128)


def test_same_parameters_and_keys_as_torchvision() -> None:
    reference = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=19, aux_loss=True)
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    for output_stride in (8, 16):
        model = build_model(19, weights=None, output_stride=output_stride)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == ref_shapes
        counts = count_parameters(model)
        assert counts["total"] == sum(p.numel() for p in reference.parameters())
        assert counts["backbone"] + counts["classifier"] + counts["aux_classifier"] == counts["total"]
    # torchvision's builder is output stride 8: same dilations and ASPP rates as ours
    ours = build_model(19, weights=None, output_stride=8)
    assert ours.backbone.layer4[0].conv2.dilation == reference.backbone.layer4[0].conv2.dilation == (2, 2)
    assert ours.classifier[0].convs[1][0].dilation == reference.classifier[0].convs[1][0].dilation == (12, 12)


def test_random_start_makes_every_residual_block_the_identity() -> None:
    from torchvision.models.resnet import Bottleneck

    model = build_model(19, weights=None, output_stride=16).eval()
    blocks = [m for m in model.backbone.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16  # ResNet-50: 3 + 4 + 6 + 3
    for block in blocks:
        assert torch.count_nonzero(block.bn3.weight) == 0 and torch.all(block.bn1.weight == 1)
    # a block without a projection then passes its input through: relu(x + 0 + bias 0) = x for x >= 0
    block = model.backbone.layer1[1]
    x = torch.rand(1, 256, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), x)


def test_output_stride_16_costs_about_a_third() -> None:
    os8 = count_flops(build_model(19, weights=None, output_stride=8), size=(256, 512))
    os16_model = build_model(19, weights=None, output_stride=16)
    os16 = count_flops(os16_model, size=(256, 512))
    assert 0.25 < os16 / os8 < 0.4
    assert os16_model.backbone.layer3[0].conv2.stride == (2, 2)  # only layer4 is dilated
    assert os16_model.classifier[0].convs[1][0].dilation == (6, 6)
    # FLOPs grow with the pixel count
    assert count_flops(os16_model, size=(512, 1024)) == pytest.approx(4 * os16, rel=0.05)


def test_imagenet_backbone_from_cache_offline(empty_torch_home: Path) -> None:
    cached = weights_cache_file(IMAGENET_WEIGHTS)
    assert cached == empty_torch_home / "resnet50-0676ba61.pth"  # torch.hub's rule: folder + url's file name
    cached.parent.mkdir(parents=True)
    state = resnet50().state_dict()  # a real ResNet-50 state dict: the file's keys and shapes
    torch.save(state, cached)

    model = build_model(19, weights="imagenet", output_stride=16)
    backbone = model.backbone.state_dict()
    assert set(backbone) == {k for k in state if not k.startswith("fc.")}  # the classifier fc is dropped
    for key, tensor in backbone.items():
        assert torch.equal(tensor, state[key]), key
    assert model.classifier[4].out_channels == 19


def test_coco_weights_from_cache_heads_replaced(empty_torch_home: Path) -> None:
    cached = weights_cache_file(COCO_WEIGHTS)
    cached.parent.mkdir(parents=True)
    state = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).state_dict()
    torch.save(state, cached)

    for output_stride in (8, 16):  # dilation changes no parameter: the same file loads into both
        model = build_model(19, weights="coco", output_stride=output_stride)
        loaded = model.state_dict()
        heads = {"classifier.4.weight", "classifier.4.bias", "aux_classifier.4.weight", "aux_classifier.4.bias"}
        for key, tensor in loaded.items():
            if key not in heads:  # backbone, ASPP, the heads' 3x3 convs: all from the file
                assert torch.equal(tensor, state[key]), key
        assert loaded["classifier.4.weight"].shape == (19, 256, 1, 1)
        assert loaded["aux_classifier.4.weight"].shape == (19, 256, 1, 1)
        assert _forward(model)["out"].shape == (1, 19, 64, 128)

    voc = build_model(21, weights="coco", aux_loss=False)  # 21 classes: the VOC heads themselves
    assert voc.aux_classifier is None
    assert torch.equal(voc.classifier[4].weight, state["classifier.4.weight"])


def test_empty_cache_offline_fails_fast_naming_file_and_folder(empty_torch_home: Path) -> None:
    if _host_reachable(IMAGENET_WEIGHTS.url):
        pytest.skip("download.pytorch.org is reachable: this test is about offline machines")
    for weights, enum in (("imagenet", IMAGENET_WEIGHTS), ("coco", COCO_WEIGHTS)):
        start = time.monotonic()
        with pytest.raises(WeightsUnavailableError) as info:
            build_model(19, weights=weights)
        assert time.monotonic() - start < 10
        message = str(info.value)
        assert weights_cache_file(enum).name in message
        assert str(empty_torch_home) in message
        assert enum.url in message
        assert "\n" not in message


def test_weights_source_says_what_a_run_starts_from(empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    import seg_utils.model as model_module

    monkeypatch.setattr(model_module, "_host_reachable", lambda url: False)
    assert weights_source("imagenet") == "imagenet (not in the cache, offline: random)"
    assert weights_source(None) == weights_source("none") == "none (random)"
    monkeypatch.setattr(model_module, "_host_reachable", lambda url: True)
    assert weights_source("coco") == "coco (not in the cache: downloaded first)"
    cached = weights_cache_file(IMAGENET_WEIGHTS)
    cached.parent.mkdir(parents=True)
    torch.save(resnet50().state_dict(), cached)
    assert weights_source("imagenet") == "imagenet"
    assert weights_source("runs/demo/best.pt") == "runs/demo/best.pt"


def test_corrupt_cached_file_is_named(empty_torch_home: Path) -> None:
    cached = weights_cache_file(IMAGENET_WEIGHTS)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")
    with pytest.raises(WeightsUnavailableError, match="resnet50-0676ba61.pth is unreadable"):
        build_model(19, weights="imagenet")


@pytest.mark.parametrize("engine_format", [True, False])
def test_checkpoint_round_trip(tmp_path: Path, engine_format: bool) -> None:
    model = build_model(19, weights=None, output_stride=16)
    path = tmp_path / "checkpoint.pth"
    if engine_format:
        torch.save({"model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []},
                    "iteration": 7, "config": {"output_stride": 16}}, path)
    else:
        torch.save(model.state_dict(), path)

    for weights in (path, str(path)):
        loaded = build_model(19, weights=weights, output_stride=16)
        for key, tensor in model.state_dict().items():
            assert torch.equal(tensor, loaded.state_dict()[key]), key
    _, meta = load_checkpoint_state(path)
    assert meta == ({"optimizer": {"state": {}, "param_groups": []}, "iteration": 7,
                     "config": {"output_stride": 16}} if engine_format else {})

    # inference without the aux head: the checkpoint's aux weights are dropped, the rest is equal
    no_aux = build_model(19, weights=path, aux_loss=False)
    assert no_aux.aux_classifier is None
    assert torch.equal(no_aux.classifier[4].weight, model.classifier[4].weight)


def test_class_count_mismatch_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "label_ids.pth"
    torch.save({"model": build_model(34, weights=None).state_dict(), "iteration": 1}, path)
    with pytest.raises(CheckpointError) as info:
        build_model(19, weights=path)
    assert str(info.value) == f"checkpoint {path} was trained for 34 classes, 19 were asked for"


def _write_marker(path: str) -> None:
    Path(path).write_text("the checkpoint ran code")


class _Payload:
    """Pickles as "call _write_marker(path)": loading it unsafely writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_write_marker, (str(self.marker),))


def test_checkpoint_with_pickled_object_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "untrusted.pth"
    torch.save({"model": _Payload(marker), "iteration": 3}, path)

    with pytest.raises(CheckpointError, match=f"checkpoint {path} refused.*_write_marker"):
        build_model(19, weights=path)
    with pytest.raises(CheckpointError, match="nothing was run"):
        load_checkpoint_state(path)
    assert not marker.exists()

    # the payload is live: an unsafe load does run it (which is why we never do that)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_unreadable_and_missing_checkpoints_are_named(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 4)
    truncated = tmp_path / "truncated.pth"
    torch.save(build_model(19, weights=None, aux_loss=False).state_dict(), tmp_path / "whole.pth")
    truncated.write_bytes((tmp_path / "whole.pth").read_bytes()[:50_000])
    for path in (garbage, truncated):
        with pytest.raises(CheckpointError, match=f"checkpoint {path} is unreadable"):
            build_model(19, weights=path, aux_loss=False)
    with pytest.raises(FileNotFoundError, match="nothere.pth not found"):
        build_model(19, weights=tmp_path / "nothere.pth")
    not_a_model = tmp_path / "not_a_model.pth"
    torch.save({"iteration": 3}, not_a_model)
    with pytest.raises(CheckpointError, match="expected a state dict or a dict with key 'model'"):
        build_model(19, weights=not_a_model)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="output_stride"):
        build_model(19, weights=None, output_stride=32)
    with pytest.raises(ValueError, match="num_classes"):
        build_model(0, weights=None)
