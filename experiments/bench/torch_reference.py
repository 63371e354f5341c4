"""Masked training against a PyTorch reference of open_lth's scheme, side by side in one run.

The reference does what open_lth's ``PrunedModel`` does: masks kept as buffers and multiplied into
the weights before every forward pass, eager mode, one Python call per step; batches are gathered
by index from tensors already in memory (cheaper than open_lth's DataLoader). Same models, batch
sizes, optimizers and densities as ``masked_step.py``. Needs the ``bench`` extra (CPU torch).
``--device cuda`` runs the reference on the GPU (``torch_step_time(..., device=, compiled=,
precision=)`` is also what ``device.sh`` calls: ``torch.compile`` and bf16 autocast variants).

    python experiments/bench/torch_reference.py [--lenet-steps 2000] [--resnet-steps 20] [--device cpu|cuda]
"""

import argparse
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import machine
from masked_step import make_trainer, step_time


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.output = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.output(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, f_in, f_out, downsample):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut = nn.Sequential()
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride, bias=False), nn.BatchNorm2d(f_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """open_lth's cifar_resnet_20: 3 stages of 3 blocks, widths 16, 32, 64."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        blocks, f_in = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(3):
                blocks.append(Block(f_in, width, stage > 0 and i == 0))
                f_in = width
        self.blocks = nn.Sequential(*blocks)
        self.output = nn.Linear(64, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.output(F.adaptive_avg_pool2d(x, 1).flatten(1))


class VGG16(nn.Module):
    """open_lth's cifar_vgg_16: 13 3x3 convs with batch norm, max-pooling after each stage, global
    average pooling, one linear output layer."""

    PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]

    def __init__(self):
        super().__init__()
        layers, f_in = [], 3
        for spec in self.PLAN:
            if spec == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(f_in, spec, 3, 1, 1), nn.BatchNorm2d(spec), nn.ReLU()]
                f_in = spec
        self.layers = nn.Sequential(*layers)
        self.output = nn.Linear(512, 10)

    def forward(self, x):
        return self.output(F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1))


class PrunedModel(nn.Module):
    """open_lth's masking: weights multiplied by their masks before every forward pass."""

    def __init__(self, model, density, seed=0):
        super().__init__()
        self.model = model
        generator = torch.Generator().manual_seed(seed)
        self.masks = {
            name: (torch.rand(p.shape, generator=generator) < density).float()
            for name, p in model.named_parameters()
            if name.endswith("weight") and p.dim() > 1
        }

    def forward(self, x):
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.masks:
                    p.mul_(self.masks[name])
        return self.model(x)


def torch_step_time(name, density, steps, repeats=3, device="cpu", compiled=False, precision="float32"):
    """Median seconds per masked training step; ``compiled``: the model under ``torch.compile``;
    ``precision="bfloat16"``: the forward pass under bf16 autocast (float32 weights, as lottery)."""
    torch.manual_seed(0)
    if name == "lenet":
        model, batch, shape = PrunedModel(LeNet(), density), 60, (1, 28, 28)
        optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    else:
        net = ResNet20() if name == "resnet20" else VGG16()
        model, batch, shape = PrunedModel(net, density), 128, (3, 32, 32)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model = model.to(device)
    model.masks = {k: m.to(device) for k, m in model.masks.items()}
    forward = torch.compile(model) if compiled else model
    n = 10_000
    images, labels = torch.rand(n, *shape, device=device), torch.randint(0, 10, (n,), device=device)
    order = torch.randperm(n, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(count):
        for step in range(count):
            index = order[(step * batch) % (n - batch) :][:batch]
            optimizer.zero_grad()
            with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=precision == "bfloat16"):
                loss = F.cross_entropy(forward(images[index]), labels[index])
            loss.backward()
            optimizer.step()
        sync()

    run(3)  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - start) / steps)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lenet-steps", type=int, default=2000)
    parser.add_argument("--resnet-steps", type=int, default=20)
    parser.add_argument("--device", default="cpu", help="torch's device: cpu or cuda (lottery uses JAX's default)")
    args = parser.parse_args()
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':10s} {'density':>8s} {'lottery ms/step':>16s} {'torch ms/step':>14s} {'speed-up':>9s}")
    for name, steps in (("lenet", args.lenet_steps), ("resnet20", args.resnet_steps)):
        trainer = make_trainer(name, masked=True)
        for density in (1.0, 0.2, 0.02):
            ours, theirs = step_time(trainer, density, steps), torch_step_time(name, density, steps, device=args.device)
            print(f"{name:10s} {100 * density:7.0f}% {1e3 * ours:16.3f} {1e3 * theirs:14.3f} {theirs / ours:8.1f}x")


if __name__ == "__main__":
    main()
