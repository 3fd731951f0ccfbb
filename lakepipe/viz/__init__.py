"""Pictures and interpretation aids for every lakepipe output.

- :mod:`~lakepipe.viz.figures`: figure creation (Agg canvas, no display, no pyplot state) and saving
  by extension (PNG, PDF, SVG);
- :mod:`~lakepipe.viz.matrices`: the group FC matrix ordered by network, network block means;
- :mod:`~lakepipe.viz.maps`: voxel and parcel maps as NIfTI images, nilearn stat-map slices and glass
  brains (FNM maps, AFNM scores painted onto the atlas, group means);
- :mod:`~lakepipe.viz.networks`: mean per network and hemisphere, as a table and a bar plot;
- :mod:`~lakepipe.viz.select`: the lake outputs a plot or report shows (catalog selections);
- :mod:`~lakepipe.viz.report`: a self-contained HTML page per run.

Every plotting function returns a :class:`matplotlib.figure.Figure`; nothing is shown on screen.
Region assignment (clusters -> atlas regions) is the pure kernel :mod:`lakepipe.compute.assign`.
"""

from lakepipe.viz.figures import FIGURE_FORMATS, save_figure

__all__ = ["FIGURE_FORMATS", "save_figure"]
