#!/usr/bin/env python3
"""Architectures outside both the shared corpus and make_more.py's set, as a stand-in for
models nobody tuned for: the shared corpus' builder with another registry, written to
~/.cache/optc-corpus/outside (--out DIR). Random weights (seed 0), batch 1; the same layout,
manifest.json and onnxruntime reference outputs, so `peers.py --corpus DIR` and
`onnx_node_suite.py run --suite corpus` work on it.

  squeezenet1_1, resnext50_32x4d, regnet_x_400mf, efficientnet_v2_s, swin_t, maxvit_t,
  alexnet               torchvision classifiers, 224x224
  inception_v3          torchvision, 299x299 (no auxiliary head)
  lraspp_mobilenet_v3_large, deeplabv3_mobilenet_v3_large
                        torchvision segmentation (the `out` map), 256x256
  gpt2_l2, albert_l2, t5_encoder_l2, roberta_l2, bart_encoder_l2
                        transformers models with 2 layers, hidden 256, 4 heads, a vocabulary
                        of 1,000, over 64 tokens (`last_hidden_state`)

Not part of CI. Usage: python benches/corpus/make_outside.py [--out DIR] [--only a,b] [--force]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_more as mm  # noqa: E402  (the shared builder, re-executed in the corpus venv)

mc = mm.mc

SEGMENTATION = {"input": {"shape": [1, 3, 256, 256], "dtype": "float32", "fill": "randn"}}
INCEPTION = {"input": {"shape": [1, 3, 299, 299], "dtype": "float32", "fill": "randn"}}


def build_classifier(name: str, out: Path) -> dict:
    import torch
    import torchvision

    torch.manual_seed(0)
    if name == "inception_v3":
        model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
        return mm.image_model("torchvision inception_v3(weights=None, aux_logits=False)", model, out, INCEPTION)
    model = getattr(torchvision.models, name)(weights=None)
    return mm.image_model(f"torchvision {mc.pkg_version('torchvision')} {name}(weights=None)", model, out)


def build_segmentation(name: str, out: Path) -> dict:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None)

    class Out(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)["out"]

    return mm.image_model(f"torchvision {name}(weights=None), its `out` map", Out(model), out, SEGMENTATION)


def build_text(name: str, out: Path) -> dict:
    import torch
    import transformers as T

    torch.manual_seed(0)
    small = dict(vocab_size=1000)
    if name == "gpt2_l2":
        model = T.GPT2Model(T.GPT2Config(n_layer=2, n_embd=256, n_head=4, bos_token_id=0,
                                         eos_token_id=0, **small))
    elif name == "albert_l2":
        model = T.AlbertModel(T.AlbertConfig(num_hidden_layers=2, hidden_size=256,
                                             num_attention_heads=4, intermediate_size=512,
                                             embedding_size=128, **small))
    elif name == "roberta_l2":
        model = T.RobertaModel(T.RobertaConfig(num_hidden_layers=2, hidden_size=256,
                                               num_attention_heads=4, intermediate_size=512,
                                               **small))
    elif name == "bart_encoder_l2":
        model = T.BartModel(T.BartConfig(encoder_layers=2, decoder_layers=1, d_model=256,
                                         encoder_attention_heads=4, decoder_attention_heads=4,
                                         **small)).encoder
    else:
        model = T.T5EncoderModel(T.T5Config(num_layers=2, d_model=256, num_heads=4, d_ff=512,
                                            d_kv=64, **small))
    spec = {"input_ids": {"shape": [1, 64], "dtype": "int64", "fill": {"randint": [0, 1000]}}}
    feeds = mc.make_inputs(spec, 0)

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids).last_hidden_state

    args = (torch.from_numpy(feeds["input_ids"]),)
    ref = mc.torch_export(Wrap(model), args, out / "model.onnx", ["input_ids"], ["last_hidden_state"])
    return {
        "inputs": spec,
        "fixed_inputs": feeds,
        "weights": "random",
        "source": f"transformers {mc.pkg_version('transformers')} {name} (2 layers, hidden 256), 64 tokens",
        "torch_ref": ref,
    }


REGISTRY = {
    **{n: (build_classifier, True) for n in (
        "squeezenet1_1", "resnext50_32x4d", "regnet_x_400mf", "efficientnet_v2_s", "swin_t",
        "maxvit_t", "alexnet", "inception_v3")},
    **{n: (build_segmentation, True) for n in (
        "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")},
    **{n: (build_text, True) for n in (
        "gpt2_l2", "albert_l2", "t5_encoder_l2", "roberta_l2", "bart_encoder_l2")},
}

if __name__ == "__main__":
    mc.REGISTRY = REGISTRY
    if not any(a == "--out" or a.startswith("--out=") for a in sys.argv[1:]):
        sys.argv[1:1] = ["--out", str(Path("~/.cache/optc-corpus/outside").expanduser())]
    sys.exit(mc.main())
