"""The studio page: shared controls on the left, Generate / Compare / Inside the model tabs on the right.

`build_demo(callbacks, entry)` returns the `gr.Blocks`; the app adds the queue and launches it with
`THEME` and `CSS` (Gradio 6 takes those at launch). The API endpoint `/generate` takes
(prompt, steps, guidance, seed) and returns (mp4 file, latency readout) on the app's default model.
"""
from __future__ import annotations

import gradio as gr

from studio import plots
from studio.callbacks import DEFECT_NOTE, GATE_NOTE, Callbacks, model_menu
from studio.examples import DEFAULT_PROMPT, LEXICON_EXAMPLES, example_prompts
from studio.registry import ModelEntry
from studio.service import BASELINE_STEPS, UI_MAX_STEPS

MODEL_QUEUE = "model"     # one concurrency group for everything that runs the network

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "sans-serif"],   # system fonts: no network
                       font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]).set(
    background_fill_primary="*neutral_50",          # (.set() would otherwise reset Soft's page colour)
    button_primary_background_fill="*primary_600", button_primary_background_fill_hover="*primary_700",
    button_primary_text_color="white")

CSS = """
#studio-header {padding: 4px 0 0 0;}
#studio-header h1 {margin: 0; font-size: 1.9rem;}
#studio-header p {margin: 2px 0 0 0; opacity: 0.75;}
#model-summary {font-size: 0.92rem;}
.mono textarea {font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace !important;
                font-size: 0.85rem !important;}
video, .pixelated img {image-rendering: pixelated;}
#speedup h3 {margin-bottom: 0;}
#seed-row {align-items: flex-end;}
#dice {max-height: 42px; margin-bottom: 12px;}
footer {opacity: 0.6;}
"""

HEADER = """
<div id="studio-header">
  <h1>EFlow Studio</h1>
  <p>Few-step video generation: a solution-flow VideoDiT with gated local-global attention, sampled in
  1&ndash;8 network evaluations instead of 100.</p>
</div>
"""

COMPARE_NOTE = (f"Runs the same prompt and seed twice on the **same network**: EFlow's few-step solution sampler, "
                f"and the classical {BASELINE_STEPS}-step Euler ODE with classifier-free guidance "
                f"(two evaluations per step). The speed-up is measured on this machine.")


def build_demo(callbacks: Callbacks, entry: ModelEntry) -> gr.Blocks:
    """The whole page for the default model `entry` (already loaded)."""
    pipe = entry.pipe
    summary_md, prompt_upd, class_upd, examples_upd, steps_upd, _, frames_upd, size_upd = callbacks.controls_for(entry)
    low, high = pipe.guidance_range
    is_text = pipe.kind == "text"

    with gr.Blocks(title="EFlow Studio", delete_cache=(1800, 3600)) as demo:
        model_state = gr.State(entry.key)
        gate_state = gr.State(None)
        gr.HTML(HEADER)
        summary = gr.Markdown(summary_md, elem_id="model-summary")

        with gr.Row(equal_height=False):
            # ------------------------------------------------ controls
            with gr.Column(scale=2, min_width=320):
                prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT if is_text else "", lines=2,
                                    max_lines=4, placeholder="a red circle moving right on a black background",
                                    info=prompt_upd["info"], visible=is_text, elem_id="prompt")
                class_choice = gr.Dropdown(label="Class", choices=class_upd.get("choices") or [],
                                           value=class_upd.get("value"), visible=not is_text)
                steps = gr.Slider(1, UI_MAX_STEPS, value=steps_upd["value"], step=1, label="Steps (= network evaluations)",
                                  info="EFlow's few-step sampler: 1 to 8 jumps from noise to video")
                guidance = gr.Slider(low, high, value=pipe.default_guidance, step=0.1, label="Guidance",
                                     info="Strength of the prompt (PDG, one pass per step)")
                with gr.Row(equal_height=False, elem_id="seed-row"):
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", scale=3,
                                     info="Same seed, same video")
                    dice = gr.Button("Random seed", scale=2, min_width=90, size="md", variant="secondary",
                                     elem_id="dice")
                with gr.Accordion("Video size", open=False):
                    with gr.Row():
                        frames = gr.Dropdown(frames_upd["choices"], value=frames_upd["value"], label="Frames")
                        size = gr.Dropdown(size_upd["choices"], value=size_upd["value"], label="Size")
                with gr.Accordion("Model", open=False):
                    model_choice = gr.Dropdown(model_menu([(entry.name, entry.key)]), value=entry.key, label="Model",
                                               info="Shipped checkpoints (no download) and folders loaded so far")
                    model_path = gr.Textbox(label="…or a checkpoint folder",
                                            placeholder="runs/my-model  (model_card.json or config.json inside)")
                    load = gr.Button("Load model", size="sm")
                with gr.Column(visible=examples_upd["visible"]) as examples_box:
                    gr.Examples([[p] for p in example_prompts(8) + LEXICON_EXAMPLES], inputs=[prompt],
                                label="Prompts that work", examples_per_page=10)

            # ------------------------------------------------ outputs
            with gr.Column(scale=3, min_width=420):
                with gr.Tabs():
                    with gr.Tab("Generate", id="generate"):
                        generate = gr.Button("Generate", variant="primary", size="lg", elem_id="generate-btn")
                        video = gr.Video(label="Video", autoplay=True, loop=True, height=360, interactive=False,
                                         elem_id="video-out")
                        with gr.Row(equal_height=False):
                            readout = gr.Textbox(label="Latency", lines=10, max_lines=16, interactive=False,
                                                 elem_classes="mono", buttons=["copy"], scale=3)
                            gif = gr.File(label="GIF download", interactive=False, scale=2)
                        latency_plot = gr.Plot(plots.empty_figure("Latency per stage appears here", 200),
                                               show_label=False)
                    with gr.Tab("Compare", id="compare"):
                        gr.Markdown(COMPARE_NOTE)
                        compare = gr.Button(f"Compare with the {BASELINE_STEPS}-step baseline", variant="primary")
                        speedup = gr.Markdown(elem_id="speedup")
                        with gr.Row():
                            fast_video = gr.Video(label="EFlow few-step", autoplay=True, loop=True, height=280,
                                                  interactive=False)
                            slow_video = gr.Video(label=f"{BASELINE_STEPS}-step CFG baseline", autoplay=True,
                                                  loop=True, height=280, interactive=False)
                        with gr.Row():
                            fast_readout = gr.Textbox(label="Few-step latency", lines=9, interactive=False,
                                                      elem_classes="mono")
                            slow_readout = gr.Textbox(label="Baseline latency", lines=9, interactive=False,
                                                      elem_classes="mono")
                        compare_plot = gr.Plot(plots.empty_figure("Timing comparison appears here", 200),
                                               show_label=False)
                    with gr.Tab("Inside the model", id="inside"):
                        gr.Markdown(GATE_NOTE)
                        inspect = gr.Button("Look inside (same prompt and seed)", variant="primary")
                        with gr.Row():
                            layer = gr.Slider(0, pipe.config.model.depth - 1, value=0, step=1, label="Layer",
                                              info="Block index; full-softmax blocks have no gates")
                            frame = gr.Slider(1, 8, value=1, step=1, label="Latent frame")
                        with gr.Row(equal_height=False):
                            heatmap = gr.Plot(plots.empty_figure("Press “Look inside”"), show_label=False, scale=3)
                            frame_image = gr.Image(label="Video frame", interactive=False, height=240, scale=1,
                                                   elem_classes="pixelated", buttons=[])
                        strip = gr.Plot(plots.empty_figure("", 120), show_label=False)
                        mean_plot = gr.Plot(plots.empty_figure("", 120), show_label=False)
                        gr.Markdown(DEFECT_NOTE)
                        defect = gr.Markdown()

        # ---------------------------------------------------- the API (hidden controls)
        with gr.Group(visible=False):
            api_prompt = gr.Textbox(label="prompt")
            api_steps = gr.Number(label="steps", value=steps_upd["value"])
            api_guidance = gr.Number(label="guidance", value=pipe.default_guidance)
            api_seed = gr.Number(label="seed", value=0)
            api_video = gr.File(label="video")
            api_readout = gr.Textbox(label="latency")
            api_button = gr.Button("generate")

        # ---------------------------------------------------- events
        inputs = [model_state, prompt, class_choice, steps, guidance, seed, frames, size]
        run = dict(concurrency_id=MODEL_QUEUE, api_visibility="undocumented")
        gr.on([generate.click, prompt.submit], callbacks.generate, inputs, [video, gif, readout, latency_plot],
              api_name="generate_ui", show_progress_on=[video], **run)
        compare.click(callbacks.compare, inputs,
                      [fast_video, slow_video, speedup, fast_readout, slow_readout, compare_plot],
                      api_name="compare", show_progress_on=[fast_video, slow_video], **run)
        inspect.click(callbacks.inspect, inputs[:6],
                      [gate_state, layer, frame, heatmap, strip, frame_image, mean_plot, defect],
                      api_name="inspect", show_progress_on=[heatmap], **run)
        gr.on([layer.input, frame.input], callbacks.gate_view, [gate_state, layer, frame],
              [heatmap, strip, frame_image, mean_plot], queue=False, api_visibility="private",
              trigger_mode="always_last")
        dice.click(callbacks.roll_seed, None, seed, queue=False, api_visibility="private")
        model_outputs = [model_state, model_choice, summary, prompt, class_choice, examples_box, steps, guidance,
                         frames, size]
        load.click(callbacks.load_model, [model_choice, model_path], model_outputs, api_visibility="private",
                   show_progress_on=[summary])
        model_choice.input(callbacks.load_model, [model_choice, gr.State("")], model_outputs,
                           api_visibility="private", show_progress_on=[summary])
        api_button.click(callbacks.api_generate, [api_prompt, api_steps, api_guidance, api_seed],
                         [api_video, api_readout], api_name="generate", concurrency_id=MODEL_QUEUE,
                         api_description="Few-step generation on the app's default model. prompt: text "
                                         "(or a class name / index for class models); steps 1-8; guidance "
                                         "in the model's range; seed >= 0. Returns (mp4 file, latency readout).")
    return demo
