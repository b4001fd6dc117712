"""Does this machine scale to two processes? CPU time of a fixed torch workload (the paper CNN:
forward + input gradient, 128 images, 150 times, 1 thread) run alone, then as two processes at
once, alternating, both in one run.

If two copies cost what one does, a dask cluster that spends more CPU per cell than one process
loses it in its own environment, not in the hardware (benchmarks/results/grid.md).

    python benchmarks/bench_process_scaling.py
"""
import subprocess
import sys
import time

import torch

if len(sys.argv) > 1 and sys.argv[1] == "work":
    torch.set_num_threads(1)
    from neurovar.models import PrebleCNN
    m = PrebleCNN()
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(128, dtype=torch.long)
    t = time.process_time()
    for _ in range(150):
        xi = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(m(xi), y)
        g, = torch.autograd.grad(loss, xi)
    print(time.process_time() - t, flush=True)
    sys.exit()
def run(k: int) -> tuple[float, list[float]]:
    w = time.time()
    ps = [subprocess.Popen([sys.executable, __file__, "work"], stdout=subprocess.PIPE, text=True) for _ in range(k)]
    cpu = [float(p.communicate()[0]) for p in ps]
    return time.time() - w, cpu
if __name__ == "__main__":
    for k in (1, 2, 1, 2):
        wall, cpu = run(k)
        print(f"{k} process(es): wall {wall:.1f} s, CPU per process "
              f"{[f'{c:.1f}' for c in cpu]}", flush=True)
