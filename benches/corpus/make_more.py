#!/usr/bin/env python3
"""More architectures for optc's performance work: the shared corpus' builder
(../../../shared/corpus/make_corpus.py) with another registry, written to
~/.cache/optc-corpus/more (--out DIR). Random weights (seed 0), batch 1; the same layout,
manifest.json and INDEX.md as the shared corpus, onnxruntime's reference outputs included,
so `peers.py --corpus DIR` and `onnx_node_suite.py run --suite corpus` work on it.

  shufflenet_v2_x1_0, mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0,
  regnet_y_400mf, mnasnet1_0, densenet121, googlenet, convnext_tiny
                        torchvision classifiers, 224x224
  vit_s6_p16            a ViT (torchvision VisionTransformer): 6 layers, hidden 384, 6 heads
  distilbert_s128       a DistilBERT-sized encoder (transformers DistilBertModel: 6 layers,
                        hidden 768), sequence 128
  whisper_tiny_encoder  Whisper-tiny's encoder (transformers WhisperModel config: 2 convs,
                        4 layers, hidden 384) over 80 mel bins x 3000 frames
  unet_small            a U-Net (4 levels, 16-128 channels, max-pool down, ConvTranspose up,
                        skip concats) on 1x3x128x128

Not part of CI. Usage: python benches/corpus/make_more.py [--out DIR] [--only a,b] [--force]
"""
from __future__ import annotations

import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
sys.path.insert(0, str(SHARED))
import make_corpus as mc  # noqa: E402  (re-executes in the corpus venv when needed)
import corpus_lib as cl  # noqa: E402

IMAGE = {"input": {"shape": [1, 3, 224, 224], "dtype": "float32", "fill": "randn"}}


def image_model(name: str, model, out: Path, spec: dict = IMAGE) -> dict:
    import torch

    (iname, s), = spec.items()
    x = torch.from_numpy(mc.make_inputs(spec, 0)[iname])
    ref = mc.torch_export(model, (x,), out / "model.onnx", [iname], ["output"])
    return {
        "inputs": spec,
        "fixed_inputs": {iname: x.numpy()},
        "weights": "random",
        "source": f"{name}, torch.manual_seed(0), opset {mc.OPSET}",
        "torch_ref": ref,
    }


def build_torchvision(name: str, out: Path) -> dict:
    import torch
    import torchvision

    torch.manual_seed(0)
    kwargs = {"init_weights": True, "aux_logits": False} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    info = image_model(f"torchvision {mc.pkg_version('torchvision')} {name}(weights=None)", model, out)
    return info


def build_vit(name: str, out: Path) -> dict:
    import torch
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    # The eval-mode fast path is a fused op the exporter does not know.
    torch.backends.mha.set_fastpath_enabled(False)
    model = VisionTransformer(image_size=224, patch_size=16, num_layers=6, num_heads=6,
                              hidden_dim=384, mlp_dim=1536)
    return image_model("torchvision VisionTransformer(224, patch 16, 6 layers, 384, 6 heads)", model, out)


def build_distilbert(name: str, out: Path) -> dict:
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
                           max_position_embeddings=512)
    model = DistilBertModel(cfg)
    spec = {
        "input_ids": {"shape": [1, 128], "dtype": "int64", "fill": {"randint": [0, 30522]}},
        "attention_mask": {"shape": [1, 128], "dtype": "int64", "fill": "ones"},
    }
    feeds = mc.make_inputs(spec, 0)
    args = tuple(torch.from_numpy(feeds[k]) for k in spec)

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ref = mc.torch_export(Wrap(model), args, out / "model.onnx", list(spec), ["last_hidden_state"])
    return {
        "inputs": spec,
        "fixed_inputs": feeds,
        "weights": "random",
        "source": f"transformers {mc.pkg_version('transformers')} DistilBertModel(6 layers, dim 768), seq 128",
        "torch_ref": ref,
    }


def build_whisper_encoder(name: str, out: Path) -> dict:
    import torch
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6,
                        decoder_layers=1, decoder_attention_heads=6, encoder_ffn_dim=1536,
                        decoder_ffn_dim=1536, num_mel_bins=80)
    enc = WhisperModel(cfg).get_encoder()

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_features):
            return self.m(input_features=input_features).last_hidden_state

    spec = {"input_features": {"shape": [1, 80, 3000], "dtype": "float32", "fill": "randn"}}
    info = image_model(f"transformers {mc.pkg_version('transformers')} Whisper-tiny encoder config", Wrap(enc), out, spec)
    return info


def build_unet(name: str, out: Path) -> dict:
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self, widths=(16, 32, 64, 128)):
            super().__init__()
            self.down = nn.ModuleList()
            c = 3
            for w in widths:
                self.down.append(block(c, w))
                c = w
            self.pool = nn.MaxPool2d(2)
            self.up = nn.ModuleList()
            self.dec = nn.ModuleList()
            for w in reversed(widths[:-1]):
                self.up.append(nn.ConvTranspose2d(c, w, 2, stride=2))
                self.dec.append(block(2 * w, w))
                c = w
            self.head = nn.Conv2d(c, 2, 1)

        def forward(self, x):
            skips = []
            for i, d in enumerate(self.down):
                x = d(x)
                if i < len(self.down) - 1:
                    skips.append(x)
                    x = self.pool(x)
            for up, dec in zip(self.up, self.dec):
                x = up(x)
                x = dec(torch.cat([x, skips.pop()], dim=1))
            return self.head(x)

    model = UNet()
    model.eval()
    spec = {"input": {"shape": [1, 3, 128, 128], "dtype": "float32", "fill": "randn"}}
    return image_model("a 4-level U-Net (16-128 channels, ConvTranspose up, concat skips)", model, out, spec)


REGISTRY = {
    **{n: (build_torchvision, True) for n in (
        "shufflenet_v2_x1_0", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
        "regnet_y_400mf", "mnasnet1_0", "densenet121", "googlenet", "convnext_tiny")},
    "vit_s6_p16": (build_vit, True),
    "distilbert_s128": (build_distilbert, True),
    "whisper_tiny_encoder": (build_whisper_encoder, True),
    "unet_small": (build_unet, True),
}

if __name__ == "__main__":
    mc.REGISTRY = REGISTRY
    if not any(a == "--out" or a.startswith("--out=") for a in sys.argv[1:]):
        sys.argv[1:1] = ["--out", str(Path("~/.cache/optc-corpus/more").expanduser())]
    sys.exit(mc.main())
