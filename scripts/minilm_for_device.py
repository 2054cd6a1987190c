"""MiniLM for the lent GPU, whose image lacks the MiniLM package and whose transfer limit (64 MiB with the tree)
is smaller than its weights (87 MB fp32, 45 MB fp16) or the train caption cache (~90 MB of token states).

`pack` keeps every layer in fp16 but only the word-embedding rows the shapes captions use (all caption sets:
a few hundred of 30,522 rows, the other half of the weights): ~22 MB. `unpack` on the GPU machine rebuilds
a full-size folder in which every other row is zero, so it encodes the shapes captions (and nothing else)
as the packaged model does, to fp16 weight rounding (cosine of the token states > 0.9999; checked by
`pack`). Point the text encoder at it with EFLOW_MINILM_PATH and fill the caption cache there:

    python scripts/minilm_for_device.py pack .cache/minilm-device          # here (needs the MiniLM package)
    python scripts/minilm_for_device.py unpack .cache/minilm-device        # there
    EFLOW_MINILM_PATH=.cache/minilm-device python -m eflow_core data text-cache --include-eval --out .cache/text
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

EMBEDDINGS = "embeddings.word_embeddings.weight"
FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]


def caption_token_ids(tokenizer) -> list[int]:
    """Every token id that the captions of every caption set (and the special tokens) tokenise to."""
    from eflow_core.data.captions import CAPTION_SETS, all_captions

    ids = set(tokenizer.all_special_ids)
    for name in CAPTION_SETS:
        for text in all_captions(name):
            ids.update(tokenizer(text)["input_ids"])
    return sorted(ids)


def pack(out: Path) -> None:
    from transformers import AutoTokenizer

    from eflow_core.text.minilm import minilm_path

    source = Path(minilm_path())
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(source / name, out / name)
    weights = load_file(source / "model.safetensors")
    key = next(k for k in weights if k.endswith(EMBEDDINGS))
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    ids = torch.tensor(caption_token_ids(tokenizer))
    packed = {k: v.half() for k, v in weights.items() if k != key}
    packed["kept_rows.ids"], packed["kept_rows.weight"] = ids, weights[key][ids].half()
    save_file(packed, out / "packed.safetensors")
    (out / "packed.json").write_text(json.dumps({"embedding_key": key, "rows": int(weights[key].shape[0]),
                                                 "kept": len(ids)}))
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"packed MiniLM into {out}: {len(ids)} of {weights[key].shape[0]} embedding rows, {size:.1f} MiB")
    unpack(out)
    check(source, out)
    (out / "model.safetensors").unlink()       # travel packed; unpack there


def unpack(folder: Path) -> None:
    meta = json.loads((folder / "packed.json").read_text())
    packed = load_file(folder / "packed.safetensors")
    ids, rows = packed.pop("kept_rows.ids"), packed.pop("kept_rows.weight")
    table = torch.zeros(meta["rows"], rows.shape[1], dtype=rows.dtype)
    table[ids] = rows
    save_file({**packed, meta["embedding_key"]: table}, folder / "model.safetensors")
    print(f"unpacked {folder / 'model.safetensors'} ({meta['kept']} word-embedding rows kept)")


def check(source: Path, packed: Path, n: int = 512) -> None:
    """The pruned fp16 model encodes captions of every set like the packaged one (token-state cosine)."""
    from eflow_core.data.captions import CAPTION_SETS, all_captions
    from eflow_core.text.minilm import MiniLMEncoder

    texts = [t for name in CAPTION_SETS for t in all_captions(name)[::max(1, len(all_captions(name)) // (n // 4))]]
    full, pruned = MiniLMEncoder(), MiniLMEncoder(path=packed)
    a, b = full.encode(texts), pruned.encode(texts)
    cos = torch.nn.functional.cosine_similarity(a.tokens[a.mask].float(), b.tokens[b.mask].float(), dim=-1)
    print(f"checked on {len(texts)} captions: token-state cosine min {cos.min():.6f}")
    if cos.min() < 0.9999:
        raise SystemExit("the pruned model does not encode the captions like the packaged one")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("pack", "unpack"):
        raise SystemExit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(Path(sys.argv[2]))
