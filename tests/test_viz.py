import base64

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from seg_utils import viz  # noqa: E402
from seg_utils.labels import TRAIN_ID_PALETTE  # noqa: E402


def test_colorize_overlay_and_error_map():
    target = np.array([[0, 13], [255, 8]])
    pred = torch.tensor([[0, 14], [3, 8]])
    colours = viz.colorize(target)
    assert colours.shape == (2, 2, 3) and tuple(colours[0, 1]) == tuple(TRAIN_ID_PALETTE[13])
    assert (colours[1, 0] == 0).all()  # ignore is black
    image = np.full((2, 2, 3), 200, np.uint8)
    blended = viz.overlay(image, target, alpha=1.0)
    assert (blended[1, 0] == 200).all() and tuple(blended[0, 1]) == tuple(TRAIN_ID_PALETTE[13])
    errors = viz.error_map(target, pred)
    assert tuple(errors[0, 1]) == (220, 30, 30) and (errors[1, 0] == 0).all() and (errors[0, 0] == 150).all()


def test_figures_and_viewer():
    image = np.zeros((32, 64, 3), np.uint8)
    target = np.zeros((32, 64), np.int64)
    pred = target.copy()
    pred[:8] = 13
    assert len(viz.show_prediction(image, target, pred, title="x").axes) == 6
    viewer = viz.interactive_viewer([image, image], [target, target], [pred, pred], ["a", "b"])
    controls, caption, picture = viewer.children
    first = picture.value
    controls.children[2].value = "car"
    assert picture.value != first and "car" in caption.value
    controls.children[0].value = 1
    assert caption.value.startswith("b:")
    bundle = viewer._repr_mimebundle_()  # the widget for JupyterLab, a still for pages without widgets
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == picture.value


def test_show_prediction_two_rows_with_legend_and_error_key():
    image = np.zeros((32, 64, 3), np.uint8)
    target = np.zeros((32, 64), np.int64)
    target[-4:] = 255  # void
    pred = target.copy()
    pred[:8] = 13
    pred[-4:] = 0  # anything predicted on void is ignored
    fig = viz.show_prediction(image, target, pred, title="frame")
    rows = [ax.get_subplotspec().rowspan.start for ax in fig.axes]
    assert rows == [0, 0, 0, 1, 1, 1]  # image | GT | prediction, then overlay | errors | legend
    errors, key = fig.axes[4], fig.axes[5]
    assert "grey = correct, red = wrong, black = ignored (void)" in errors.get_title()
    assert "pixel accuracy 71.4%" in errors.get_title()  # 8 of 28 counted rows wrong; void rows not counted
    names = [t.get_text() for t in key.get_legend().get_texts()]
    assert names == ["0 road", "13 car", "void (not evaluated)"]  # classes of GT or prediction, then void


def test_smooth_is_an_unbiased_moving_average():
    # a constant stays that constant from the first point (no pull towards 0), a step is followed gradually
    assert np.allclose(viz.smooth([2.0] * 5), 2.0)
    step = viz.smooth([0.0] * 10 + [1.0] * 50, weight=0.9)
    assert step[9] == 0 and 0.05 < step[10] < 0.2 and step[-1] > 0.99
    assert np.all(np.diff(step[10:]) > 0)


def test_class_iou_bars_never_cover_the_miou_label():
    # high bars under the dashed line's height, as for a nearly perfect model: the label must stay clear of them
    iou = np.linspace(0.7, 0.95, 19)
    metrics = {"class_names": [f"c{i}" for i in range(19)], "iou": iou, "miou": float(iou.mean())}
    fig = viz.plot_class_iou(metrics, compare={"iou": iou}, labels=("a", "b"))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    label = next(t for t in ax.texts if t.get_text().startswith("mIoU"))
    assert label.get_text() == f"mIoU\n{100 * iou.mean():.1f}"
    box = label.get_window_extent(renderer)
    assert not any(box.overlaps(bar.get_window_extent(renderer)) for bar in ax.patches)
    assert fig.bbox.contains(box.x1 - 1, box.y0 + 1)  # inside the figure, not cut off at its edge
