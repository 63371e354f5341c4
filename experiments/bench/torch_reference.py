"""Masked training against a PyTorch reference of open_lth's scheme, side by side in one run.

The reference does what open_lth's ``PrunedModel`` does: masks kept as buffers and multiplied into
the weights before every forward pass, eager mode, one Python call per step; batches are gathered
by index from tensors already in memory (cheaper than open_lth's DataLoader). Same models, batch
sizes, optimizers and densities as ``masked_step.py``. Needs the ``bench`` extra (CPU torch).

    python experiments/bench/torch_reference.py [--lenet-steps 2000] [--resnet-steps 20]
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


class PrunedModel(nn.Module):
    """open_lth's masking: weights multiplied by their masks before every forward pass."""

    def __init__(self, model, density, seed=0):
        super().__init__()
        self.model = model
        generator = torch.Generator().manual_seed(seed)
        self.masks = {name: (torch.rand(p.shape, generator=generator) < density).float()
                      for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1}

    def forward(self, x):
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.masks:
                    p.mul_(self.masks[name])
        return self.model(x)


def torch_step_time(name, density, steps, repeats=3):
    torch.manual_seed(0)
    if name == "lenet":
        model, batch, shape = PrunedModel(LeNet(), density), 60, (1, 28, 28)
        optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    else:
        model, batch, shape = PrunedModel(ResNet20(), density), 128, (3, 32, 32)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    n = 10_000
    images, labels = torch.rand(n, *shape), torch.randint(0, 10, (n,))
    order = torch.randperm(n)

    def run(count):
        for step in range(count):
            index = order[(step * batch) % (n - batch):][:batch]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images[index]), labels[index])
            loss.backward()
            optimizer.step()

    run(2)
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
    args = parser.parse_args()
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':10s} {'density':>8s} {'lottery ms/step':>16s} {'torch ms/step':>14s} {'speed-up':>9s}")
    for name, steps in (("lenet", args.lenet_steps), ("resnet20", args.resnet_steps)):
        trainer = make_trainer(name, masked=True)
        for density in (1.0, 0.2, 0.02):
            ours, theirs = step_time(trainer, density, steps), torch_step_time(name, density, steps)
            print(f"{name:10s} {100 * density:7.0f}% {1e3 * ours:16.3f} {1e3 * theirs:14.3f} {theirs / ours:8.1f}x")


if __name__ == "__main__":
    main()
