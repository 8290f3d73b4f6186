"""Pictures: label maps in the official colours, overlays, prediction grids, confusion heatmaps, curves.

Every function returns what it drew (an array or a matplotlib Figure) and computes nothing that a
test or a metric relies on.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import cv2
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .classes import ClassTable, as_table
from .labels import IGNORE_INDEX, class_names, palette
from .media import overlay

__all__ = [
    "to_numpy",
    "colorize",
    "overlay",
    "error_map",
    "legend_patches",
    "smooth",
    "show_images",
    "show_prediction",
    "plot_class_shares",
    "plot_class_iou",
    "plot_confusion",
    "plot_history",
    "interactive_viewer",
]


def to_numpy(array) -> np.ndarray:
    """Return a numpy array for a tensor (any device) or an array."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def colorize(label_map, mode: str | ClassTable = "trainId") -> np.ndarray:
    """Return the (H, W, 3) uint8 picture of a label map in its class colours: ``mode`` a Cityscapes label mode
    (the official colours; ignore black) or a class table (its colours; ignore in its ignore colour, else black)."""
    return as_table(mode).palette[to_numpy(label_map).astype(np.uint8)]


def error_map(target, prediction) -> np.ndarray:
    """Return an (H, W, 3) picture: correct pixels grey, wrong pixels red, ignored pixels black."""
    target, prediction = to_numpy(target), to_numpy(prediction)
    out = np.full(target.shape + (3,), 150, dtype=np.uint8)
    out[target != prediction] = (220, 30, 30)
    out[target == IGNORE_INDEX] = 0
    return out


def legend_patches(ids: Sequence[int] | None = None, mode: str | ClassTable = "trainId") -> list[Patch]:
    """Return legend entries (colour patch + class name) for the given class ids (default: all classes); the
    ignore value (255) among them is "void (not evaluated)", in the colour ``colorize`` draws it."""
    table = as_table(mode)
    ids = range(len(table)) if ids is None else ids
    ignored = "void (not evaluated)" if table.cityscapes_mode else "ignore (not scored)"
    light = table.palette.astype(int).sum(1) > 700  # white-ish (an ignore colour): outlined, or it is invisible
    return [Patch(fc=table.palette[i] / 255, ec="grey" if light[i] else table.palette[i] / 255,
                  label=ignored if i == IGNORE_INDEX else f"{i} {table.names[i]}") for i in ids]


def show_images(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, cols: int | None = None,
                width: float = 4.0, legend_ids: Sequence[int] | None = None, mode: str | ClassTable = "trainId",
                suptitle: str | None = None) -> plt.Figure:
    """Return a figure with the images in a grid, with titles and an optional class-colour legend."""
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    h, w = images[0].shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, width * rows * h / w + 0.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles or [None] * len(images)):
        ax.imshow(image, interpolation="nearest")
        if title:
            ax.set_title(title, fontsize=10)
    if legend_ids is not None:
        # below the pictures: the inline backend saves with bbox_inches="tight", so nothing is cut off
        fig.legend(handles=legend_patches(legend_ids, mode), loc="upper center", ncol=min(len(legend_ids), 7),
                   fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_label_values(label_ids, train_ids, window: tuple[slice, slice], step: int) -> plt.Figure:
    """Return both label PNGs as an image viewer shows them (grey = stored value, ``window`` in yellow), and below
    them the window, one pixel every ``step``, in the class colours with the stored values written out."""
    (ys, xs), zooms = window, []
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.4), layout="constrained", height_ratios=(1, 1.3))
    for top, bottom, stored, mode in zip(*axes, (label_ids, train_ids), ("labelId", "trainId")):
        shown = top.imshow(stored, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        top.add_patch(Rectangle((xs.start - 0.5, ys.start - 0.5), xs.stop - xs.start, ys.stop - ys.start,
                                fill=False, ec="yellow", lw=2))
        zooms.append(zoom := stored[ys.start + step // 2:ys.stop:step, xs.start + step // 2:xs.stop:step])
        bottom.imshow(picture := colorize(zoom, mode))
        for (r, c), value in np.ndenumerate(zoom):  # white on dark colours, black on light ones
            bottom.text(c, r, str(value), ha="center", va="center", fontsize=11,
                        color="white" if picture[r, c].mean() < 110 else "black")
        top.set_title(f"{mode}s PNG as an image viewer shows it (grey = stored value)", fontsize=10)
        bottom.set_title(f"yellow window, {mode}s in the {mode} colours", fontsize=10)
        top.axis("off"), bottom.axis("off")
    fig.colorbar(shown, ax=axes[0], shrink=0.8, label="stored value")
    pairs = sorted(set(zip(zooms[0].ravel().tolist(), zooms[1].ravel().tolist())))  # (labelId, trainId) in the window
    legend = [Patch(fc=palette("labelId")[i] / 255, ec="grey", label=f"{class_names('labelId')[i]}: {i} → {t}"
                    + " (ignore)" * (t == IGNORE_INDEX)) for i, t in pairs]
    fig.legend(handles=legend, loc="outside lower center", ncol=min(len(legend), 5), fontsize=10,
               title="class: labelId → trainId", frameon=False)
    return fig


def plot_iou(truth, predicted) -> plt.Figure:
    """Return truth, prediction and their overlap (TP green, FP orange, FN red) of two boolean masks, IoU on top."""
    tp, fp, fn = truth & predicted, ~truth & predicted, truth & ~predicted
    overlap = np.full(truth.shape + (3,), 235, np.uint8)  # true negatives light grey, as in the masks
    overlap[tp], overlap[fp], overlap[fn] = (40, 160, 60), (250, 150, 30), (210, 40, 40)
    masks = [np.where(m[..., None], 80, 235).repeat(3, axis=-1).astype(np.uint8) for m in (truth, predicted)]
    return show_images([*masks, overlap], ["truth (dark)", "prediction (dark)", "TP green, FP orange, FN red"],
                       suptitle=f"IoU = TP / (TP + FP + FN) = {tp.sum()} / ({tp.sum()} + {fp.sum()} + {fn.sum()}) "
                                f"= {tp.sum() / (tp | fp | fn).sum():.2f}")


def show_prediction(image: np.ndarray, target, prediction, title: str = "", alpha: float = 0.5,
                    width: float = 4.0) -> plt.Figure:
    """Return a two-row figure (trainIds): image | ground truth | prediction, then overlay | error map | legend.

    ``width`` is the width of one panel in inches. The error map's colours are spelled out in its title; the
    legend names the classes present in the ground truth or the prediction, and void where there is any.
    """
    target, prediction = to_numpy(target), to_numpy(prediction)
    valid = target != IGNORE_INDEX
    acc = float((prediction[valid] == target[valid]).mean()) if valid.any() else float("nan")
    present = set(np.unique(target).tolist()) | set(np.unique(prediction).tolist())
    pictures = [image, colorize(target), colorize(prediction), overlay(image, prediction, alpha),
                error_map(target, prediction)]
    titles = ["image", "ground truth", "prediction", "prediction over the image",
              f"errors: pixel accuracy {acc:.1%}\ngrey = correct, red = wrong, black = ignored (void)"]
    h, w = target.shape[:2]
    fig, axes = plt.subplots(2, 3, figsize=(3 * width, 2 * width * h / w + 1.0), layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, name in zip(axes.flat, pictures, titles):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name, fontsize=10)
    classes = legend_patches(sorted(present))  # void, where there is any, comes last
    axes[1, 2].legend(handles=classes, loc="upper left", ncol=1 + (len(classes) > 7) + (len(classes) > 14),
                      fontsize=8.5, handlelength=1.2, columnspacing=0.8, frameon=False,
                      title="classes in ground truth or prediction", title_fontsize=9, alignment="left")
    if title:
        fig.suptitle(title)
    return fig


def plot_class_shares(shares: Sequence[float], names: Sequence[str] | None = None, mode: str | ClassTable = "trainId",
                      title: str = "pixel share per class", reference: Sequence[float] | None = None) -> plt.Figure:
    """Return a bar chart of per-class pixel shares in the class colours (optionally beside reference shares)."""
    names = list(names or as_table(mode).names)
    shares = np.asarray(shares, dtype=float)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    x = np.arange(len(names))
    width = 0.4 if reference is not None else 0.8
    ax.bar(x - (width / 2 if reference is not None else 0), 100 * shares, width,
           color=as_table(mode).palette[: len(names)] / 255, edgecolor="black", linewidth=0.5, label="this set")
    if reference is not None:
        ax.bar(x + width / 2, 100 * np.asarray(reference), width, color="lightgrey", edgecolor="black",
               linewidth=0.5, label="real Cityscapes train")
        ax.legend()
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.set_ylabel("% of all pixels")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_class_iou(metrics: dict, title: str = "IoU per class", compare: dict | None = None,
                   labels: tuple[str, str] = ("ours", "other"), mode: str | ClassTable = "trainId") -> plt.Figure:
    """Return a bar chart of per-class IoU (%) in the class colours (``mode``: a label mode or a class table), with
    the mIoU of ``metrics`` as a dashed line (its value beside the axes); ``compare``'s bars in grey beside them,
    its mIoU (if it has one) dotted, and a legend naming all four."""
    names = list(metrics["class_names"])
    iou = 100 * np.asarray(metrics["iou"], dtype=float)
    colours = as_table(mode).palette[: len(names)] / 255
    fig, ax = plt.subplots(figsize=(10, 3.4))
    x = np.arange(len(names))
    width = 0.4 if compare is not None else 0.8
    ax.bar(x - (width / 2 if compare is not None else 0), np.nan_to_num(iou), width,
           color=colours, edgecolor="black", linewidth=0.5, label=labels[0])
    ax.axhline(100 * metrics["miou"], color="black", linestyle="--", linewidth=1)
    if compare is not None:
        ax.bar(x + width / 2, np.nan_to_num(100 * np.asarray(compare["iou"], dtype=float)), width,
               color="lightgrey", edgecolor="black", linewidth=0.5, label=labels[1])
        handles = [tuple(Patch(facecolor=c, edgecolor="black", linewidth=0.5) for c in colours[:6]),
                   Patch(facecolor="lightgrey", edgecolor="black", linewidth=0.5),
                   Line2D([], [], color="black", linestyle="--", linewidth=1)]
        texts = [f"{labels[0]} (class colours)", labels[1], f"mIoU, {labels[0]}: {100 * metrics['miou']:.1f}"]
        if "miou" in compare:
            ax.axhline(100 * compare["miou"], color="dimgrey", linestyle=":", linewidth=1.2)
            handles.append(Line2D([], [], color="dimgrey", linestyle=":", linewidth=1.2))
            texts.append(f"mIoU, {labels[1]}: {100 * compare['miou']:.1f}")
        # the first series has one colour per class: its swatch shows a few of them; above the bars (which reach
        # 100), so that it covers none
        ax.legend(handles, texts, handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, loc="upper center",
                  ncol=2, fontsize=8, frameon=False, handlelength=3)
    # the line's value beside the axes, at its height, where no bar can cover it
    ax.text(1.005, 100 * metrics["miou"], f"mIoU\n{100 * metrics['miou']:.1f}", transform=ax.get_yaxis_transform(),
            ha="left", va="center", fontsize=9)
    for i in np.flatnonzero(np.isnan(iou)):
        ax.text(i, 1, "n/a", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.set_ylim(0, 100 if compare is None else 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("IoU (%)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_sliding_windows(image: np.ndarray, windows: Sequence[tuple[int, ...]], title: str = "") -> plt.Figure:
    """Return a figure of sliding windows (top, left, height, width): on the left each window lit on the dimmed
    image, in the order given; on the right how many windows cover each pixel, with their outlines."""
    ys, xs = sorted({win[0] for win in windows}), sorted({win[1] for win in windows})
    coverage = np.zeros(image.shape[:2], dtype=np.int64)
    fig = plt.figure(figsize=(14, 4.4), layout="constrained")
    tiles_fig, overlap_fig = fig.subfigures(1, 2, width_ratios=[1.1, 1])
    tiles, overlap = tiles_fig.subplots(len(ys), len(xs), squeeze=False), overlap_fig.subplots()
    for n, (y, x, h, w) in enumerate(windows):
        seen = (image * 0.3).astype(np.uint8)
        seen[y:y + h, x:x + w] = image[y:y + h, x:x + w]
        tile = tiles[ys.index(y), xs.index(x)]
        tile.imshow(seen)
        tile.set_title(f"{n + 1}: rows {y}-{y + h - 1}, columns {x}-{x + w - 1}", fontsize=8)
        for ax, style in ((tile, "-"), (overlap, (2 * n, (4, 4)))):  # shifted dashes: shared edges alternate
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=plt.cm.tab10(n % 10), lw=2,
                                   linestyle=style))
        coverage[y:y + h, x:x + w] += 1
    levels = int(coverage.max())
    counts = overlap.imshow(coverage, cmap=plt.get_cmap("viridis", levels), vmin=0.5, vmax=levels + 0.5)
    overlap_fig.colorbar(counts, ax=overlap, ticks=range(1, levels + 1), shrink=0.7, label="windows over the pixel")
    overlap.set_title("overlap: each pixel's logits are averaged over this many windows", fontsize=10)
    for ax in [*tiles.flat, overlap]:
        ax.axis("off")
    tiles_fig.suptitle(title, fontsize=10)
    return fig


def plot_confusion(matrix, names: Sequence[str] | None = None, normalize: bool = True,
                   title: str = "confusion (rows: ground truth, normalised)") -> plt.Figure:
    """Return a heatmap of a confusion matrix, rows = ground truth, each row normalised to sum 1."""
    matrix = to_numpy(matrix).astype(np.float64)
    names = list(names or class_names())[: matrix.shape[0]]
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    fig, ax = plt.subplots(figsize=(8, 7))
    shown = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def draw_deeplabv3(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]]) -> plt.Figure:
    """Return a block diagram of torchvision's DeepLabV3-ResNet50: strides, dilations and ASPP rates read off ``model``,
    each part's output C×H×W from ``shapes`` (module name -> (C, H, W), as forward hooks measure them)."""
    scale = {name: shapes["out"][1] // shape[1] for name, shape in shapes.items()}  # output = 1/scale of the input
    size = {n: "×".join(map(str, s)) + f" (1/{scale[n]})" * (scale[n] > 1) for n, s in shapes.items()}
    boxes = [(f"image\n3×{shapes['out'][1]}×{shapes['out'][2]}", 0.5, 1.7, "white"),
             (f"stem: 7×7 conv, stride 2\nmax-pool, stride 2\n{size['backbone.maxpool']}", 1.5, 1.7, "#dbe9f6")]
    for x, name in enumerate(["layer1", "layer2", "layer3", "layer4"], 2):
        stage = model.backbone.get_submodule(name)
        dilations = ",".join(str(block.conv2.dilation[0]) for block in stage)
        boxes.append((f"{name}: {len(stage)} blocks\nstride {stage[0].conv2.stride[0]}\ndilation {dilations}\n"
                      f"{size['backbone.' + name]}", x + 0.5, 1.7, "#dbe9f6"))
    rates = ", ".join(str(branch[0].dilation[0]) for branch in model.classifier[0].convs[1:4])
    boxes += [(f"ASPP: 1×1 conv, 3×3 convs at rates {rates},\nimage pooling; concat, 1×1 conv\n{size['classifier.0']}",
               4.8, 0.55, "#e2f0d9"),
              (f"classifier: 3×3 conv, BN, ReLU,\n1×1 conv to the classes\n{size['classifier']}", 2.6, 0.55, "#fff2cc"),
              (f"bilinear upsampling ×{scale['classifier']}\n'out' {size['out']}", 0.8, 0.55, "#fff2cc"),
              (f"aux_classifier (FCN head): 3×3 conv, BN, ReLU, dropout, 1×1 conv to the classes, bilinear upsampling"
               f" ×{scale['backbone.layer3']}\n'aux' {size['aux']}, for a training loss only", 4.3, 2.75, "#fde9d9")]
    fig, ax = plt.subplots(figsize=(12, 3.8))
    ax.set(xlim=(0, 6), ylim=(0.15, 3.05), title=f"DeepLabV3-ResNet50 at output stride {scale['backbone.layer4']}: "
           "each part's output C×H×W, and its fraction of the input size")
    ax.axis("off")
    patches = []  # each box's outline; an arrow joins a box to the one it reads (the aux head reads layer3)
    for i, (text, x, y, colour) in enumerate(boxes):
        source = patches[4 if i == 9 else i - 1] if patches else None
        arrow = dict(arrowstyle="<|-", color="0.3", patchB=source) if source else None
        patches.append(ax.annotate(text, (0.5, 0.5) if source else (x, y), (x, y), source or "data", "data",
                                   arrowprops=arrow, ha="center", va="center", fontsize=8.5,
                                   bbox=dict(boxstyle="round", fc=colour, ec="0.4")).get_bbox_patch())
    return fig


def smooth(values: Sequence[float], weight: float = 0.9) -> np.ndarray:
    """Return the exponential moving average of ``values`` with TensorBoard's start-up correction: point i is
    ``sum_j w^(i-j) (1-w) v_j / (1 - w^(i+1))``, so the first points are averages, not pulled towards 0."""
    values = np.asarray(values, dtype=float)
    out, avg = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out[i] = avg / (1 - weight ** (i + 1))
    return out


def plot_history(history: dict, smoothing: float = 0.9) -> plt.Figure:
    """Return training curves: loss (raw, faint, and its moving average), learning rate and val mIoU."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(history["iter"], history["loss"], lw=0.8, alpha=0.3, color="C0", label="per iteration")
    if len(history["loss"]):
        axes[0].plot(history["iter"], smooth(history["loss"], smoothing), lw=1.8, color="C0",
                     label=f"moving average ({smoothing})")
        axes[0].legend(fontsize=8)
    axes[0].set_title("training loss")
    axes[1].plot(history["iter"], history["lr"], lw=1)
    axes[1].set_title("learning rate")
    if history.get("val_iter"):
        axes[2].plot(history["val_iter"], [100 * m for m in history["val_miou"]], "o-", ms=4)
    axes[2].set_title("val mIoU (%)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_val_curves(runs: dict[str, dict], title: str = "val mIoU", styles: dict[str, str] | None = None
                    ) -> plt.Figure:
    """Return val mIoU (%) against iteration for several runs, each a history (``val_iter``, ``val_miou``)
    under its name; ``styles`` gives a run a matplotlib format string (e.g. ``"k--"``)."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, history in runs.items():
        ax.plot(history["val_iter"], [100 * m for m in history["val_miou"]], (styles or {}).get(name, "o-"),
                ms=3, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_atrous_taps(map_size: tuple[int, int], rates: Sequence[int], cell: tuple[int, int] | None = None
                     ) -> plt.Figure:
    """Return a drawing of a feature map of ``map_size`` (rows, columns) cells and, for one ``cell`` (default: the
    centre), the 9 taps of a 3x3 convolution at each of ``rates``: filled where they read the map, hollow where
    they fall on the zero padding outside it."""
    rows, cols = map_size
    cy, cx = cell if cell is not None else (rows // 2, cols // 2)
    reach = max(rates)
    fig, ax = plt.subplots(figsize=(9, 9 * (rows + 2 * reach) / (cols + 2 * reach) + 0.6))
    ax.add_patch(Rectangle((-0.5, -0.5), cols, rows, facecolor="#dde6f0", edgecolor="black", label="feature map"))
    for i, rate in enumerate(rates):
        taps = [(cy + dy * rate, cx + dx * rate) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        inside = [(y, x) for y, x in taps if 0 <= y < rows and 0 <= x < cols]
        outside = [(y, x) for y, x in taps if (y, x) not in inside]
        colour = f"C{i}"
        ax.scatter([x for _, x in inside], [y for y, _ in inside], s=60, color=colour,
                   label=f"rate {rate}: {len(inside)} of 9 taps on the map")
        if outside:
            ax.scatter([x for _, x in outside], [y for y, _ in outside], s=60, facecolors="none", edgecolors=colour)
    ax.set_xlim(cx - reach - 2, cx + reach + 2)
    ax.set_ylim(cy + reach + 2, cy - reach - 2)
    ax.set_aspect("equal")
    ax.set_xlabel("feature column")
    ax.set_ylabel("feature row")
    ax.set_title(f"a feature map of {rows}x{cols} cells (shaded) and the taps of cell ({cy}, {cx}); "
                 "hollow: zero padding")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def interactive_viewer(images: Sequence[np.ndarray], targets: Sequence, predictions: Sequence,
                       names: Sequence[str] | None = None):
    """Return an ipywidgets viewer: pick a frame, the overlay opacity, and one class to highlight.

    The picture is an Image widget redrawn with numpy and OpenCV on every change (no matplotlib, no
    Output widget), so it stays responsive and runs unchanged in a headless notebook execution. Displayed, it
    also carries a PNG still of its first view, which pages that cannot draw widgets show instead.
    """
    import ipywidgets as widgets

    names = list(names or [f"frame {i}" for i in range(len(images))])
    train_names = class_names("trainId")
    frame = widgets.IntSlider(0, 0, len(images) - 1, description="frame")
    opacity = widgets.FloatSlider(0.5, min=0.0, max=1.0, step=0.05, description="opacity")
    highlight = widgets.Dropdown(options=["(all classes)", *train_names], description="class")
    caption = widgets.Label()
    picture = widgets.Image(format="png")

    def render(*_) -> None:
        i = frame.value
        image, target, prediction = images[i], to_numpy(targets[i]), to_numpy(predictions[i])
        shown = overlay(image, prediction, opacity.value)
        text = f"{names[i]}: prediction over the image | errors (red: wrong, black: ignored)"
        if highlight.value != "(all classes)":
            k = train_names.index(highlight.value)
            # the class as predicted (filled), the rest dimmed, and its ground-truth outline in yellow
            shown = np.where((prediction == k)[..., None], shown, (image * 0.35).astype(np.uint8))
            edges = cv2.morphologyEx((target == k).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
            shown[edges.astype(bool)] = (255, 255, 0)
            text = f"{names[i]}: {highlight.value} as predicted (filled) and annotated (yellow outline) | errors"
        both = np.concatenate([shown, np.full((shown.shape[0], 8, 3), 255, np.uint8), error_map(target, prediction)],
                              axis=1)
        picture.value = cv2.imencode(".png", cv2.cvtColor(both, cv2.COLOR_RGB2BGR))[1].tobytes()
        caption.value = text

    for control in (frame, opacity, highlight):
        control.observe(render, names="value")
    render()
    viewer = widgets.VBox([widgets.HBox([frame, opacity, highlight]), caption, picture])
    widget_bundle = viewer._repr_mimebundle_

    def with_still(**kwargs) -> dict:
        # A page that cannot draw widgets (GitHub, nbviewer, a notebook reopened without its kernel) shows the
        # next richest type in the bundle: a still of the view as it is, instead of a blank cell.
        bundle = dict(widget_bundle(**kwargs) or {})
        bundle["image/png"] = base64.b64encode(picture.value).decode("ascii")
        return bundle

    viewer._repr_mimebundle_ = with_still
    return viewer
