"""A cnn-m2 training step on one-channel vs three-channel (replicated gray) 28-px input, side by side in one process
(round-robin): would one-channel views on Fashion-MNIST buy speed? (docs/calibration.md: no, 1.01×; so the views
stay RGB). Plain CE, batch 128, SGD, one thread.

    python benchmarks/gray_input.py --steps 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pllbench.nets import Classifier, SmallCNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = [(fmt_name, fmt, channels) for fmt_name, fmt in (("channels_last", torch.channels_last),
                                                                 ("contiguous", torch.contiguous_format))
                for channels in (3, 1)]
    setups = {}
    for name, fmt, channels in variants:
        torch.manual_seed(0)
        net = Classifier(SmallCNN((32, 64, 128), channels, convs_per_stage=2), 10).to(memory_format=fmt)  # cnn-m2
        x = torch.randn(128, channels, 28, 28).contiguous(memory_format=fmt)
        setups[(name, channels)] = (net, torch.optim.SGD(net.parameters(), lr=0.01), x)
    y = torch.randint(0, 10, (128,))
    times = {key: [] for key in setups}
    for _ in range(args.rounds):  # round-robin, so a busy machine slows every variant alike
        for key, (net, opt, x) in setups.items():
            for _ in range(args.steps):
                start = time.perf_counter()
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                times[key].append(time.perf_counter() - start)
    print("| memory format | input channels | step (ms, median) | ÷ 3-channel |\n|---|---|---|---|")
    for (name, channels), values in times.items():
        ms = 1000 * statistics.median(values)
        base = 1000 * statistics.median(times[(name, 3)])
        print(f"| {name} | {channels} | {ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
