"""Matplotlib for the pictures labnet draws (a run's curves, a sweep's plots, a study's, the health
histograms): pyplot on the Agg backend, which draws files without a display, imported only when a
picture is drawn (``import labnet`` stays free of Matplotlib)."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
