"""A contact sheet of evaluation prompts: what the numbers of `evaluate` look like.

    from eflow_core.metrics.sheet import sample_sheet
    sample_sheet(EFlowPipeline.from_pretrained("shapes-t2v"), steps=(4, 1)).save("sheet.png")

Per prompt (the first `num_prompts` of `evaluate`'s held-out prompts, same seed), one line of frames
per step count and a last line with the real clip behind the prompt, each line `frames` frames spread
evenly over the clip, labelled on the left. `python -m eflow_core eval ... --sheet PATH` writes one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eflow_core.metrics.evaluate import _generate, _pipeline_size, _pipeline_stride, _requests
from eflow_core.metrics.video import to_uint8
from eflow_core.metrics.worlds import get_world

LABEL_WIDTH = 64     # px at scale 1, left of each line
CAPTION_HEIGHT = 12  # px at scale 1, above each prompt's lines


def _frames_row(video: np.ndarray, frames: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (H, frames * W, 3): `frames` frames spread evenly from first to last."""
    idx = np.linspace(0, video.shape[0] - 1, frames).round().astype(int)
    return np.concatenate([video[i] for i in idx], axis=1)


def sample_sheet(pipeline, steps: Sequence[int] = (4, 1), num_prompts: int = 8, frames: int = 5, seed: int = 0,
                 guidance: float | None = None, sampler: str = "solution", scale: int = 2):
    """Generate the first `num_prompts` evaluation prompts at each step count -> a PIL RGB image.

    Lines per prompt: one per entry of `steps` (clips (T, H, W, 3) from `generate_batch`, the noise seed
    `seed` as in `evaluate`), then `real`: the world's clip whose attributes the prompt describes. The
    image is scaled `scale` times (nearest neighbour, so latent blocks stay visible)."""
    from PIL import Image, ImageDraw

    if num_prompts < 1 or frames < 1 or not steps:
        raise ValueError("sample_sheet needs num_prompts >= 1, frames >= 1 and at least one step count")
    spec = get_world(getattr(pipeline, "world", None) or "shapes")
    size = _pipeline_size(pipeline)
    guidance = guidance if guidance is not None else getattr(pipeline, "default_guidance", None)
    prompts, labels, requested, real = _requests(spec, pipeline, num_prompts, seed, size, _pipeline_stride(pipeline))
    lines = {f"{n} step{'s' if n > 1 else ''}": _generate(pipeline, prompts, labels, int(n), guidance, seed,
                                                        sampler).numpy() for n in steps}
    lines["real"] = to_uint8(real).numpy()
    t, h, w = size
    line_h, line_w = h, frames * w
    block_h = CAPTION_HEIGHT + len(lines) * line_h
    sheet = Image.new("RGB", ((LABEL_WIDTH + line_w) * scale, num_prompts * block_h * scale), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(num_prompts):
        top = i * block_h * scale
        caption = prompts[i] if prompts is not None else ", ".join(requested[i].values())
        draw.text((2, top + 1), caption, fill="black")
        for j, (label, clips) in enumerate(lines.items()):
            y = top + (CAPTION_HEIGHT + j * line_h) * scale
            row = Image.fromarray(_frames_row(clips[i], frames)).resize((line_w * scale, line_h * scale),
                                                                         Image.NEAREST)
            sheet.paste(row, (LABEL_WIDTH * scale, y))
            draw.text((4, y + line_h * scale // 2 - 5), label, fill="black")
    return sheet
