"""Acoustics figure: received energy at every node for one source over the floor plan, plus RIR pairs."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from asgf_nav.acoustics.rir import SceneRirs
from asgf_nav.scenes.floorplan import FloorPlan
from asgf_nav.viz.floorplan_plot import draw_floorplan


def received_energy_db(rirs: SceneRirs, source_node: int, yaw_index: int = 0) -> np.ndarray:
    """Energy (dB, both ears summed) of the RIR at every node for ``source_node``."""
    out = np.empty(rirs.num_receivers)
    for r in range(rirs.num_receivers):
        x = rirs.rir(r, source_node, yaw_index).astype(np.float64)
        out[r] = 10 * np.log10((x**2).sum() + 1e-20)
    return out


def acoustics_figure(
    plan: FloorPlan, positions: np.ndarray, rirs: SceneRirs, source_node: int, probe_nodes: list[int]
) -> Figure:
    """Heat map of received energy over the plan, and the binaural RIR (yaw 0) at each probe node."""
    energy = received_energy_db(rirs, source_node)
    energy = energy - energy.max()
    fig = Figure(figsize=(13, 6.5))
    grid = fig.add_gridspec(len(probe_nodes), 2, width_ratios=(1.25, 1.0))
    ax = fig.add_subplot(grid[:, 0])
    draw_floorplan(ax, plan, room_labels=True)
    pts = np.asarray(positions)[:, [0, 2]]
    sc = ax.scatter(
        pts[:, 0],
        pts[:, 1],
        c=energy,
        cmap="inferno",
        vmin=max(energy.min(), -60),
        vmax=0,
        s=28,
        zorder=7,
        edgecolors="none",
    )
    ax.scatter(*pts[source_node], marker="*", s=260, color="cyan", edgecolors="black", zorder=8, label="source")
    for i, node in enumerate(probe_nodes):
        ax.annotate(
            str(i + 1),
            pts[node],
            color="white",
            fontsize=9,
            ha="center",
            va="center",
            zorder=9,
            bbox={"boxstyle": "circle,pad=0.2", "fc": "#3a7bd5", "ec": "none"},
        )
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    # the source named in the title rather than a legend, which covered a corner of the plan
    ax.set_title(f"{rirs.scene}: received energy (dB re max) facing yaw 0, source (star) at node {source_node}")
    fig.colorbar(sc, ax=ax, shrink=0.7, label="dB")
    t_ms = np.arange(rirs.length) / rirs.sample_rate * 1000
    for i, node in enumerate(probe_nodes):
        sub = fig.add_subplot(grid[i, 1])
        rir = rirs.rir(node, source_node, 0)
        shown = t_ms < 150
        # the ears apart, left above and right below: drawn over each other the later trace hid the other
        peak = float(np.abs(rir[shown]).max())
        gap = 1.1 * peak if peak > 0 else 1.0
        sub.plot(t_ms[shown], rir[shown, 0] + gap, lw=0.6, color="#d1495b", label="left")
        sub.plot(t_ms[shown], rir[shown, 1] - gap, lw=0.6, color="#00798c", label="right")
        sub.set_yticks([gap, -gap], ["L", "R"])
        dist = float(np.linalg.norm(positions[node] - positions[source_node]))
        sub.set_title(f"{i + 1}: node {node}, {dist:.1f} m, {energy[node]:.0f} dB, yaw 0", fontsize=9)
        sub.tick_params(labelsize=7)
        sub.set_ylabel("amplitude per ear", fontsize=7)
        if i == 0:
            sub.legend(fontsize=7, loc="upper right")
        if i == len(probe_nodes) - 1:
            sub.set_xlabel("time (ms)")
    fig.tight_layout()
    return fig


def pick_probe_nodes(positions: np.ndarray, source_node: int, count: int = 3) -> list[int]:
    """Nodes at increasing distance from the source (near, middle, far), never the source node itself
    where the scene has another."""
    dist = np.linalg.norm(np.asarray(positions) - np.asarray(positions)[source_node], axis=1)
    order = np.argsort(dist, kind="stable")
    if len(order) > 1:
        order = order[order != source_node]
    picks = [order[int(q * (len(order) - 1))] for q in np.linspace(0.05, 1.0, count)]
    return [int(p) for p in picks]
