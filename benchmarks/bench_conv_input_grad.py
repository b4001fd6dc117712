"""PyTorch's CPU input gradient of PrebleCNN's convolutions against the same gradient computed
as a forward convolution with the flipped, transposed kernel.

For a stride-1 convolution, :math:`\\partial L/\\partial x = \\mathrm{conv}(\\partial L/\\partial y,
\\tilde W)` with :math:`\\tilde W` the kernel flipped in both spatial axes and its in/out
channels swapped, padding :math:`k - 1 - p` (Dumoulin & Visin 2016, "A guide to convolution
arithmetic", sec. 4). This measures, at the attack's batch, how much of an APGD gradient pass
is the input gradient of ``conv0`` (1 -> 6 channels, 5x5), where the CPU backward kernel is
slow: a kernel-level cost that both neurovar and ART pay with the same network.

Run: ``python benchmarks/bench_conv_input_grad.py [--n 128] [--repeats 20]``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def cpu_ms(fn, repeats):
    fn()
    c0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - c0) / repeats * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    print("| layer | forward ms | input gradient (autograd's kernel) ms | "
          "as flipped conv ms | max abs difference |")
    print("|---|---|---|---|---|")
    for name, shape in {"conv0": (1, 6, 5, 2, 28), "conv1": (6, 16, 3, 1, 14),
                        "conv2": (16, 16, 5, 0, 14)}.items():
        print(_row(name, *shape, n=args.n, repeats=args.repeats, gen=gen))


def _row(name, cin, cout, k, p, hw, *, n, repeats, gen) -> str:
    w = torch.randn(cout, cin, k, k, generator=gen)
    x = torch.randn(n, cin, hw, hw, generator=gen)
    go = torch.randn_like(F.conv2d(x, w, padding=p))
    w_flip = w.flip(-1, -2).transpose(0, 1).contiguous()

    def autograd_kernel():
        return torch.ops.aten.convolution_backward(
            go, x, w, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1, [True, False, False])[0]

    def flipped():
        return F.conv2d(go, w_flip, padding=k - 1 - p)

    diff = float((autograd_kernel() - flipped()).abs().max())
    return (f"| {name} ({cin}->{cout}, {k}x{k}) | "
            f"{cpu_ms(lambda: F.conv2d(x, w, padding=p), repeats):.2f} | "
            f"{cpu_ms(autograd_kernel, repeats):.2f} | {cpu_ms(flipped, repeats):.2f} | "
            f"{diff:.1e} |")

if __name__ == "__main__":
    main()
