"""EFlow Studio: the Gradio web UI over `eflow_core.pipeline.EFlowPipeline`.

Modules (import direction: kernels <- eflow_core <- studio <- app.py):

    plots.py      plotly figures (gate heat maps, mean gate per layer, latency bars); no gradio
    readout.py    plain-text readouts (latency, speed-up, semigroup defect, model summary); no gradio
    examples.py   example prompts drawn from the shapes world's vocabularies; no gradio
    registry.py   thread-safe cache of loaded pipelines (fast model switching); no gradio
    storage.py    the app-owned output folder (mp4 / GIF files), pruned as it grows; no gradio
    standin.py    writes an untrained stand-in checkpoint folder (development and tests); no gradio
    service.py    browser values -> pipeline arguments, generation, compare, gate capture, files; no gradio
    callbacks.py  what the buttons do: generation with progress, user-facing errors (gradio)
    layout.py     the page: controls, Generate / Compare / Inside the model tabs, the API endpoint (gradio)

Importing `studio` (or `studio.plots`) does not import gradio, so notebooks can use the figures.
"""
