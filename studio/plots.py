"""Plotly figures for the studio and the notebooks (no gradio import here: notebooks use these directly).

Gate maps come from `EFlowPipeline(..., capture_gates=True).gates`: {layer index: numpy (T', H', W', 2)}
with channel 0 the global (linear-attention) gate and channel 1 the local (window-attention) gate,
averaged over heads, from the last network evaluation of the sampler.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

GATE_COLORSCALE = "Viridis"
GLOBAL_COLOR, LOCAL_COLOR = "#6366f1", "#f59e0b"
_LAYOUT = dict(template="plotly_white", margin=dict(l=40, r=20, t=50, b=40), font=dict(size=12))


def empty_figure(message: str = "Nothing to show yet", height: int = 300) -> go.Figure:
    """A blank figure with a centred message (placeholder before the first run)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font=dict(size=14, color="#6b7280"),
                       xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_layout(height=height, xaxis=dict(visible=False), yaxis=dict(visible=False), **_LAYOUT)
    return fig


def gate_layers(gates: Mapping[int, np.ndarray]) -> list[int]:
    """The layer indices that have gate maps (GLGA layers), ascending."""
    return sorted(int(k) for k in gates)


def gate_heatmaps(gates: Mapping[int, np.ndarray], layer: int, frame: int, height: int = 340) -> go.Figure:
    """Global and local gate maps of one layer at one latent frame, side by side (values in [0, 1]).

    gates: {layer: (T', H', W', 2)}; `frame` indexes T' (latent frames after patchify).
    """
    maps = np.asarray(gates[layer], dtype=np.float32)
    frame = int(np.clip(frame, 0, maps.shape[0] - 1))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=(f"global gate (mean {maps[frame, ..., 0].mean():.2f})",
                                        f"local gate (mean {maps[frame, ..., 1].mean():.2f})"))
    for col in (0, 1):
        fig.add_trace(go.Heatmap(z=maps[frame, ..., col], zmin=0.0, zmax=1.0, colorscale=GATE_COLORSCALE,
                                 showscale=col == 1, colorbar=dict(title="gate", thickness=12),
                                 hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>"),
                      row=1, col=col + 1)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{col + 1 if col else ''}", row=1, col=col + 1,
                         showticklabels=False)
        fig.update_xaxes(showticklabels=False, row=1, col=col + 1)
    fig.update_layout(height=height, title=dict(text=f"layer {layer}, latent frame {frame + 1}/{maps.shape[0]}",
                                                x=0.5), **_LAYOUT)
    return fig


def gate_frame_strip(gates: Mapping[int, np.ndarray], layer: int, height: int = 260) -> go.Figure:
    """All latent frames of one layer: two rows (global, local) of small heat maps over time."""
    maps = np.asarray(gates[layer], dtype=np.float32)
    frames = maps.shape[0]
    fig = make_subplots(rows=2, cols=frames, horizontal_spacing=0.01, vertical_spacing=0.06,
                        row_titles=["global", "local"], column_titles=[str(i + 1) for i in range(frames)])
    for row in (0, 1):
        for t in range(frames):
            fig.add_trace(go.Heatmap(z=maps[t, ..., row], zmin=0.0, zmax=1.0, colorscale=GATE_COLORSCALE,
                                     showscale=row == 0 and t == frames - 1, colorbar=dict(thickness=10),
                                     hovertemplate=f"frame {t + 1}: %{{z:.3f}}<extra></extra>"),
                          row=row + 1, col=t + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(height=height, title=dict(text=f"layer {layer} over the latent frames", x=0.5), **_LAYOUT)
    return fig


def mean_gate_figure(gates: Mapping[int, np.ndarray], highlight: int | None = None, height: int = 300) -> go.Figure:
    """Mean global and local gate per GLGA layer (grouped bars); `highlight` outlines one layer."""
    layers = gate_layers(gates)
    means = np.array([np.asarray(gates[i], dtype=np.float32).reshape(-1, 2).mean(axis=0) for i in layers])
    labels = [str(i) for i in layers]
    outline = [3 if i == highlight else 0 for i in layers]
    fig = go.Figure([
        go.Bar(x=labels, y=means[:, 0], name="global", marker=dict(color=GLOBAL_COLOR,
                                                                   line=dict(width=outline, color="#111827"))),
        go.Bar(x=labels, y=means[:, 1], name="local", marker=dict(color=LOCAL_COLOR,
                                                                 line=dict(width=outline, color="#111827"))),
    ])
    fig.update_layout(barmode="group", height=height, yaxis=dict(range=[0, 1], title="mean gate"),
                      xaxis=dict(title="layer (GLGA blocks; full-softmax blocks have no gates)", type="category"),
                      title=dict(text="mean gate per layer", x=0.5),
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"), **_LAYOUT)
    return fig


def latency_figure(timings: Mapping, title: str = "where the time goes", height: int = 240) -> go.Figure:
    """Horizontal bars: text encoding, each sampler step, decode (milliseconds)."""
    from studio.readout import stage_times

    stages = stage_times(timings)
    names = [n for n, _ in stages][::-1]
    ms = [s * 1000 for _, s in stages][::-1]
    colors = ["#10b981" if n.startswith("step") else "#9ca3af" for n in names]
    fig = go.Figure(go.Bar(x=ms, y=names, orientation="h", marker_color=colors,
                           hovertemplate="%{y}: %{x:.1f} ms<extra></extra>"))
    fig.update_layout(height=max(height, 22 * len(names) + 90), xaxis_title="milliseconds",
                      title=dict(text=f"{title} (total {timings.get('total', 0.0) * 1000:.0f} ms)", x=0.5),
                      **_LAYOUT)
    return fig


def compare_figure(fast_timings: Mapping, baseline_timings: Mapping, fast_label: str = "EFlow few-step",
                   baseline_label: str = "50-step CFG baseline", height: int = 220) -> go.Figure:
    """Two stacked horizontal bars (text, sampling, decode) in seconds: few-step vs baseline."""
    rows = [(fast_label, fast_timings), (baseline_label, baseline_timings)]
    fig = go.Figure()
    for stage, color in (("text", "#9ca3af"), ("sampling", "#10b981"), ("decode", "#6b7280")):
        values = [float(sum(t.get("steps", []))) if stage == "sampling" else float(t.get(stage, 0.0))
                  for _, t in rows]
        fig.add_trace(go.Bar(y=[r[0] for r in rows], x=values, name=stage, orientation="h", marker_color=color,
                             hovertemplate="%{y} " + stage + ": %{x:.2f} s<extra></extra>"))
    fig.update_layout(barmode="stack", height=height, xaxis_title="seconds",
                      legend=dict(orientation="h", y=1.05, x=1, xanchor="right", yanchor="bottom"), **_LAYOUT)
    return fig
