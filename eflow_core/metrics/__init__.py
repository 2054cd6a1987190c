"""Evaluation metrics.

- `probe`: the project's small 3-D CNN video classifier (`VideoProbe`), trained on a synthetic world's
  real clips (`train_probe`, saved under `checkpoints/probe-<world>/`, loaded with `load_probe`).
- `frechet`: Fréchet distance between Gaussian fits of features; `probe_fd` on the probe's embedding.
- `adherence`: does the probe read the requested attributes (or class) off generated clips.
- `fvd`: FVD proper — the I3D network (canonical layer names) with weights the user supplies (`load_i3d`).
- `evaluate`: `evaluate(pipeline, steps=(1, 2, 4, 8))` -> probe-FD, adherence and latency per step count;
  `format_table(results)`.
Functions named like their module (`evaluate.evaluate`, `fvd.fvd`) are imported from the module:
`from eflow_core.metrics.evaluate import evaluate`, `from eflow_core.metrics.fvd import fvd`.
"""
import importlib

# Lazy exports: `import eflow_core.metrics` stays cheap; each module loads when one of its names is used.
_EXPORTS = {
    "attribute_adherence": "adherence", "class_adherence": "adherence", "confusion_counts": "adherence",
    "score_attributes": "adherence",
    "format_table": "evaluate",
    "frechet_distance": "frechet", "frechet_distance_from_features": "frechet", "gaussian_stats": "frechet",
    "probe_fd": "frechet",
    "InceptionI3d": "fvd", "i3d_features": "fvd", "load_i3d": "fvd",
    "VideoProbe": "probe", "load_probe": "probe", "save_probe": "probe", "train_probe": "probe",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"eflow_core.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'eflow_core.metrics' has no attribute {name!r}")
