"""The pictures a run logs: learning curves and confusion matrix (a sweep's objective against lr is
:mod:`labnet.compare.plot`'s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labnet.figures import pyplot


def _save(fig, path: Path, tight: bool = True) -> Path:
    """Save and close; every run draws two pictures at its end, so those have fixed margins (tight_layout
    and PNG compression would double what they cost)."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=100, pil_kwargs={"compress_level": 1})
    pyplot().close(fig)
    return path


def plot_curves(history: list[dict[str, float]], path: Path) -> Path:
    """Loss and accuracy per epoch, train, validation and (``trainer.eval_test``) test, side by side."""
    fig = pyplot().figure(figsize=(10, 4))
    draw_curves(fig, history)
    return _save(fig, path, tight=False)


def draw_curves(fig, history: list[dict[str, float]]) -> None:
    """:func:`plot_curves` on a given figure (``labnet.run(...).plot()`` draws on one of its own)."""
    epochs = np.arange(1, len(history) + 1)
    axes = fig.subplots(1, 2, gridspec_kw=dict(left=0.07, right=0.98, bottom=0.12, top=0.97))
    for ax, what in zip(axes, ("loss", "accuracy"), strict=True):
        for split in ("train", "val", "test"):
            values = [h.get(f"{split}_{what}") for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend()


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> Path:
    """Counts per (true, predicted) class on a blue scale, numbers in the cells.

    Drawn with Pillow (which Matplotlib itself draws PNGs with), not with Matplotlib: its hundred text
    artists made this picture take 0.16 s of every run's end, a third of what tracking costs a 5 s run."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    k = matrix.shape[0]
    cell = 44 if k <= 20 else max(8, 880 // k)
    left, top, right, bottom = 64, 48, 16, 56
    size = (left + k * cell + right, top + k * cell + bottom)
    image = Image.new("RGB", (max(size[0], 320), size[1]), "white")
    draw = ImageDraw.Draw(image)
    font_file = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
    small = ImageFont.truetype(font_file, max(6, min(12, cell // 3)))
    label = ImageFont.truetype(font_file, 14)
    blues = matplotlib.colormaps["Blues"]
    peak = max(int(matrix.max()), 1)
    for i in range(k):
        for j in range(k):
            x, y, share = left + j * cell, top + i * cell, float(matrix[i, j]) / peak
            draw.rectangle((x, y, x + cell, y + cell), fill=tuple(int(255 * c) for c in blues(share)[:3]))
            if cell >= 20:
                middle = (x + cell / 2, y + cell / 2)
                draw.text(middle, str(matrix[i, j]), fill="white" if share > 0.5 else "black", font=small, anchor="mm")
    for c in range(k):
        draw.text((left + c * cell + cell / 2, top + k * cell + 4), str(c), fill="black", font=small, anchor="mt")
        draw.text((left - 6, top + c * cell + cell / 2), str(c), fill="black", font=small, anchor="rm")
    middle = left + k * cell / 2
    draw.text((middle, top + k * cell + 24), "predicted", fill="black", font=label, anchor="mt")
    draw.text((max(middle, image.width / 2), top / 2), title, fill="black", font=label, anchor="mm")
    word = Image.new("RGB", (60, 20), "white")
    ImageDraw.Draw(word).text((30, 10), "true", fill="black", font=label, anchor="mm")
    image.paste(word.rotate(90, expand=True), (8, int(top + k * cell / 2 - 30)))
    image.save(path, compress_level=1)
    return path
