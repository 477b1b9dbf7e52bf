"""Plain-torch models of BERT-base and ResNet-50 size, for the strategy that cannot trace the transformers classes.

``torch.fx.symbolic_trace`` stops at the data-dependent checks inside transformers' BERT and ResNet (and
transformers 5 no longer ships its own FX tracer), so the ``fx`` tag cost is measured on these: the same layer
counts and widths, written without Python control flow on tensors. Factories for ``module.path:factory``.
"""

from __future__ import annotations

import torch
from torch import nn

# The shapes and dynamic axes modelexport derives for the transformers models of the same size.
INPUT_SPECS = {
    "bert_base": {
        "input_ids": {"shape": [2, 16], "dtype": "int64", "high": 30522, "dynamic_axes": {0: "batch", 1: "sequence"}}
    },
    "resnet_50": {"pixel_values": {"shape": [2, 3, 224, 224], "dtype": "float32", "dynamic_axes": {0: "batch"}}},
}


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.size = heads, hidden // heads
        self.query, self.key, self.value = (
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
        )
        self.output = nn.Linear(hidden, hidden)

    def split(self, x):
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.size).transpose(1, 2)

    def forward(self, x):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        attention = torch.softmax(q @ k.transpose(-1, -2) / self.size**0.5, dim=-1)
        context = (attention @ v).transpose(1, 2).flatten(2)
        return self.output(context)


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int):
        super().__init__()
        self.attention, self.attention_norm = SelfAttention(hidden, heads), nn.LayerNorm(hidden)
        self.intermediate, self.output = nn.Linear(hidden, intermediate), nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden)

    def forward(self, x):
        x = self.attention_norm(x + self.attention(x))
        return self.output_norm(x + self.output(nn.functional.gelu(self.intermediate(x))))


class TorchBert(nn.Module):
    """BERT-base's shape: 30522 × 768 embeddings, 12 layers, 12 heads, 3072 intermediate."""

    def __init__(self, vocab=30522, hidden=768, layers=12, heads=12, intermediate=3072, positions=512):
        super().__init__()
        self.word_embeddings, self.position_embeddings = nn.Embedding(vocab, hidden), nn.Embedding(positions, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(Layer(hidden, heads, intermediate) for _ in range(layers))

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.norm(self.word_embeddings(input_ids) + self.position_embeddings(positions))
        for layer in self.layers:
            x = layer(x)
        return x


class Bottleneck(nn.Module):
    def __init__(self, inputs: int, width: int, stride: int):
        super().__init__()
        outputs = width * 4
        self.conv1, self.bn1 = nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, outputs, 1, bias=False), nn.BatchNorm2d(outputs)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
            if stride != 1 or inputs != outputs
            else nn.Identity()
        )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


class TorchResNet(nn.Module):
    """ResNet-50's shape: bottleneck stages of 3, 4, 6 and 3 blocks, 64 to 2048 channels."""

    def __init__(self, depths=(3, 4, 6, 3)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        stages, inputs = [], 64
        for i, depth in enumerate(depths):
            width = 64 * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(Bottleneck(inputs, width, 2 if j == 0 and i > 0 else 1))
                inputs = width * 4
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

    def forward(self, pixel_values):
        return self.stages(self.stem(pixel_values)).mean(dim=(2, 3))


def bert_base() -> nn.Module:
    torch.manual_seed(0)
    return TorchBert().eval()


def resnet_50() -> nn.Module:
    torch.manual_seed(0)
    return TorchResNet().eval()
