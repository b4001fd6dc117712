"""False-positive rate and power of neurovar's gradient-masking flags, on tiny digit networks.

A masking flag is only worth reading if it stays quiet on networks whose gradients are honest
and fires on networks whose gradients are not (Athalye, Carlini & Wagner 2018). Over
``--seeds`` seeds (one trained network per seed and kind; the same test images for every seed,
as in the experiment's crossed design) this measures how often each flag fires on:

honest networks (every flag here is a false positive)
    ``none``        a deterministic MLP (64-64-10 on 8x8 digits),
    ``isotropic``   the same MLP trained and evaluated with isotropic Gaussian activation noise
                    after the ReLU (:class:`neurovar.noise.IsotropicNoise`), attacked
                    adaptively: EOT over 8 draws, 5 repeated evaluations;
planted masked networks (every missed flag is a false negative)
    ``shattered-zero``    the deterministic MLP behind input quantisation to 5 grey levels
                          (``torch.round``: its gradient is zero almost everywhere -- the
                          shattered gradient of thermometer encoding / quantisation defences,
                          Athalye et al. 2018, Sec. 4.2);
    ``shattered-random``  the same quantisation with a *random* backward pass (the gradient
                          points nowhere: a non-differentiable step with an incorrect gradient);
    ``single-pass``       the ``isotropic`` network attacked the way the paper protocol attacks
                          it: CE-PGD on one noise draw per step (no EOT), one evaluation.

Flags measured (the package's own code, no copy):

- ``check``: :func:`neurovar.perturb.check_robustness_result` on the network's
  :func:`neurovar.perturb.evaluate_robustness` result (pgd_ce, pgd_dlr_targeted, square;
  plus ``pgd_ce_1pass`` for ``single-pass``) -- "masked" = a white-box attack in
  ``masked_attacks``; also its parts (``reaches_chance``, ``near_worst_case``,
  ``not_beaten_by_black_box``, ``monotone_in_eps``);
- ``flat``: accuracy of CE-PGD does not fall as eps grows (largest-eps accuracy within 0.05
  of the smallest-eps one while ``none`` falls by more than 0.2;
  :func:`neurovar.experiment.reproduction.flat_in_eps`, the rule of claim 4 and of
  :func:`~neurovar.experiment.analysis.masking_diagnostics`);
- ``calibrated``: the experiment's earlier calibrated flag
  (:func:`neurovar.experiment.analysis.calibrated_gap_flag`): CE-PGD accuracy minus
  the ensemble worst case at the largest eps, minus the gap the same evaluation leaves on the
  seed's ``none`` and ``isotropic`` networks, above ``tol`` = 0.1;
- ``point_every_eps``: the same point rule at every eps (what an earlier attempt at "check
  every eps" did; shown for its false-positive rate);
- ``every_eps``: the flag :func:`~neurovar.experiment.analysis.masking_diagnostics` applies
  now (:func:`neurovar.experiment.analysis.every_eps_excess`): at every eps, per image, CE-PGD
  correct minus worst-case correct minus the same on the reference network (``none`` or
  ``isotropic`` of the same seed, the one with the larger mean gap), with a bootstrap CI
  (Bonferroni over the 4 eps, 95% family-wise); fires where the lower bound exceeds
  ``tol`` = 0.1. Per seed (one seed: images resampled) in the rate table, per (seed, eps) in
  the per-eps table, and pooled over the seeds (crossed bootstrap, seeds x images, as the
  experiment runs it on its seeds);
- ``overstates``: the reproduction's protocol flag
  (:func:`neurovar.experiment.reproduction.protocol_excess`): per image, the single-pass
  attack's outcome minus the adaptive worst case (one evaluation each), minus the same on
  ``none``, with a crossed bootstrap over seeds x images; fires when the CI is above 0.

Square's budget: accuracy under Square at several query budgets on ``none`` and
``shattered-zero`` beside the best gradient attack, to state the budget from which Square is
a real check (close to the gradient attacks where gradients are honest, far below them where
they are not).

Run: ``python benchmarks/masking_flags.py [--seeds 5] [--n 100]``; writes
``benchmarks/results/masking_flags.md``. Everything is seeded; one torch thread.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from sklearn.datasets import load_digits
from torch import nn

from neurovar.experiment.analysis import calibrated_gap_flag, every_eps_excess
from neurovar.experiment.reproduction import flat_in_eps, protocol_excess
from neurovar.noise import IsotropicNoise, inject_noise
from neurovar.perturb import PGD, check_robustness_result, evaluate_robustness

OUT = Path(__file__).resolve().parent / "results" / "masking_flags.md"
EPS = [0.05, 0.1, 0.2, 0.5]
LEVELS = 5  # grey levels of the quantised input
NOISE_STD = 1.5  # std of the isotropic activation noise (ReLU outputs have std ~ 2-4 here)
TOL = 0.1  # the experiment's masking tolerance (masking_diagnostics' default)


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


class _RandomGrad(torch.autograd.Function):
    """Quantise in the forward pass; a random gradient (seeded generator) in the backward."""

    @staticmethod
    def forward(ctx, x, gen):  # noqa: D102
        ctx.gen = gen
        return torch.round(x * (LEVELS - 1)) / (LEVELS - 1)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return torch.randn(grad.shape, generator=ctx.gen), None


class Quantised(nn.Module):
    """``model(round(x * (L-1)) / (L-1))``: gradient zero (``random=False``) or random."""

    def __init__(self, model: nn.Module, *, random: bool, seed: int) -> None:
        super().__init__()
        self.model, self.random = model, random
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.random:
            q = _RandomGrad.apply(x, self.gen)
        else:
            q = torch.round(x * (LEVELS - 1)) / (LEVELS - 1)
        return self.model(q)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 300):
    """Full-batch Adam; the initialisation and every noise draw come from ``seed``."""
    torch.manual_seed(seed)  # benchmark script: the global generator is ours to set
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _single_pass_factory(model, *, eps, norm, eot_samples, rng, device, steps=20, **_):
    """CE-PGD on one noise draw per step whatever the evaluation's EOT setting (paper protocol)."""
    return PGD(model, eps=eps, norm=norm, steps=steps, loss="ce", eot_samples=1, rng=rng,
               device=device)


def _attacks(name: str) -> dict | list:
    base = ["pgd_ce", "pgd_dlr_targeted", "square"]
    if name != "single-pass":
        return base
    from neurovar.perturb.evaluate import get_attack_factory

    out = {"pgd_ce_1pass": _single_pass_factory}
    out.update({a: get_attack_factory(a) for a in base})
    return out


def evaluate(name: str, model: nn.Module, x, y, seed: int, n_queries: int) -> xr.Dataset:
    stochastic = name in ("isotropic", "single-pass")
    return evaluate_robustness(
        model, x, y, eps=EPS, attacks=_attacks(name), steps=20, n_queries=n_queries,
        n_evaluations=5 if stochastic else 1, eot_samples=8 if stochastic else 1,
        rng=1000 + seed, progress=False,
    )


def single_eval_outcomes(model, x, y, seed: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image, one evaluation each: correct under the single-pass CE-PGD, and under the
    adaptive ensemble's worst case (EOT 8), at every eps (mean over eps, as the reproduction's
    ``_protocol_gap`` averages over the strengths)."""
    attacks = _attacks("single-pass")
    res = evaluate_robustness(
        model, x, y, eps=EPS, attacks=attacks, steps=20, n_queries=n_queries, n_evaluations=1,
        eot_samples=8, rng=2000 + seed, progress=False,
    )
    c = res.correct.transpose("eps", "attack", ...).values.astype(float)
    attacks_ = [str(a) for a in res.attack.values]
    paper = c[:, attacks_.index("pgd_ce_1pass")]
    adaptive = c[:, [i for i, a in enumerate(attacks_) if a != "pgd_ce_1pass"]].min(axis=1)
    return paper.mean(axis=0), adaptive.mean(axis=0)


def without_attack(res: xr.Dataset, attack: str) -> xr.Dataset:
    """An evaluate_robustness result without one attack, its worst case recomputed."""
    out = res.drop_sel(attack=attack)
    worst = out["correct"].all("attack")
    out["worst_case_correct"] = worst
    out["worst_case_accuracy"] = worst.mean("stimulus")
    return out


def _gap_at_max(res) -> float:
    return float(res.accuracy.sel(attack="pgd_ce").isel(eps=-1)
                 - res.worst_case_accuracy.isel(eps=-1))


def _probe(name: str) -> str:
    return "pgd_ce_1pass" if name == "single-pass" else "pgd_ce"


def per_image_gap(res: xr.Dataset, probe: str = "pgd_ce") -> np.ndarray:
    """Per (eps, stimulus): the probe attack's outcome minus the worst case (0/1), as the
    cells store ``ce_attack_correct - correct``."""
    c = res.correct.sel(attack=probe).transpose("eps", ...).values.astype(float)
    w = res.worst_case_correct.transpose("eps", ...).values.astype(float)
    return c - w


def _refs(name: str) -> list[str]:
    """The reference networks of a network, as masking_diagnostics takes them."""
    return [k for k in ("none", "isotropic") if k != name]


def run_seed(seed: int, x_tr, y_tr, x, y, n_queries: int) -> tuple[dict, dict]:
    """The five networks of one seed, evaluated; and the per-image single-evaluation outcomes
    of ``none`` and ``single-pass`` for the protocol flag."""
    det = train(mlp(), x_tr, y_tr, seed)
    noisy = mlp()
    inject_noise(noisy, {"2": IsotropicNoise(NOISE_STD, rng=seed)})  # kept for the whole run
    train(noisy, x_tr, y_tr, seed)
    nets = {
        "none": det,
        "isotropic": noisy,
        "shattered-zero": Quantised(det, random=False, seed=seed).eval(),
        "shattered-random": Quantised(det, random=True, seed=seed).eval(),
        "single-pass": noisy,
    }
    results = {k: evaluate(k, m, x, y, seed, n_queries) for k, m in nets.items()
               if k != "isotropic"}
    # one evaluation of the noisy network serves both: 'isotropic' is the adaptive ensemble of
    # the same run without the single-pass attack (its worst case recomputed without it)
    results["isotropic"] = without_attack(results["single-pass"], "pgd_ce_1pass")
    results = {k: results[k] for k in nets}
    outcomes = {k: single_eval_outcomes(nets[k], x, y, seed, n_queries)
                for k in ("none", "single-pass")}
    return results, outcomes


def flag_rows(seed: int, results: dict, other: dict) -> list[dict]:
    """Every flag on every network of one seed. ``other``: the results of the next seed, whose
    honest networks serve as the ``reference`` of :func:`check_robustness_result` (an
    independent network without masking evaluated the same way: ``none`` for the deterministic
    networks, ``isotropic`` for the noisy ones)."""
    ref_gaps = [_gap_at_max(results["none"]), _gap_at_max(results["isotropic"])]
    none_acc = results["none"].accuracy.sel(attack="pgd_ce").values
    rows = []
    for name, res in results.items():
        diag = check_robustness_result(res, n_classes=10, warn=False)
        noisy = name in ("isotropic", "single-pass")
        with_ref = check_robustness_result(
            res, n_classes=10, warn=False, reference=other["isotropic" if noisy else "none"])
        c = diag.checks
        white = [a for a in map(str, c.attack.values) if a != "square"]
        probe = _probe(name)
        acc = res.accuracy.sel(attack=probe).values
        flat = flat_in_eps(acc, none_acc, 0.05)
        gap = float(res.accuracy.sel(attack=probe).isel(eps=-1)
                    - res.worst_case_accuracy.isel(eps=-1))
        # the reference networks of the same seed, as masking_diagnostics takes them
        refs = [g for k, g in zip(("none", "isotropic"), ref_gaps, strict=True) if k != name]
        # every eps: the point rule, and the per-image rule with its CI (one seed: images)
        gaps_all = (res.accuracy.sel(attack=probe) - res.worst_case_accuracy).values
        ref_all = [(results[k].accuracy.sel(attack="pgd_ce")
                    - results[k].worst_case_accuracy).values for k in _refs(name)]
        point_eps = [bool(calibrated_gap_flag(gaps_all[i], [r[i] for r in ref_all], TOL))
                     for i in range(len(EPS))]
        e = every_eps_excess(per_image_gap(res, probe)[:, None, :],
                             [per_image_gap(results[k])[:, None, :] for k in _refs(name)],
                             tol=TOL, n_resamples=999, rng=seed)

        def fails(check: str, cc=c, white=white) -> bool:
            return bool(not all(bool(cc[check].sel(attack=a)) for a in white))

        rows.append({
            "seed": seed, "network": name, "clean": _clean(res), "probe": probe,
            "probe_acc_max_eps": float(acc[-1]),
            "worst_max_eps": float(res.worst_case_accuracy.isel(eps=-1)),
            "square_max_eps": float(res.accuracy.sel(attack="square").isel(eps=-1)),
            "max_point_gap": float(c.max_gap.sel(attack=white).max()),
            "check_masked": bool(diag.masked_attacks),
            "check_masked_ref": bool(with_ref.masked_attacks),
            "not_chance": fails("reaches_chance"),
            "not_near_worst": fails("near_worst_case"),
            "beaten_by_square": fails("not_beaten_by_black_box"),
            "not_monotone": fails("monotone_in_eps"),
            "flat": flat,
            "calibrated": bool(calibrated_gap_flag(gap, refs, TOL)),
            "point_every_eps": any(point_eps),
            "every_eps": bool(e["flagged"].any()),
            **{f"point@{eps:g}": p for eps, p in zip(EPS, point_eps, strict=True)},
            **{f"every_eps@{eps:g}": bool(f) for eps, f in zip(EPS, e["flagged"], strict=True)},
            "every_eps_max_low": float(np.nanmax(e["ci_low"])),
            "gap_minus_ref": gap - max(refs) if refs else gap,
            "message": diag.messages[0] if diag.messages else "",
        })
    return rows


def _clean(res) -> float:
    return float(res.clean_accuracy) if "clean_accuracy" in res else float("nan")


def square_budget(x_tr, y_tr, x, y, budgets: list[int], seeds: list[int]) -> pd.DataFrame:
    """Square's accuracy at each budget beside the best gradient attack, on ``none`` and on
    ``shattered-zero``, at eps 0.1 and 0.2 (mean over seeds)."""
    rows = []
    for seed in seeds:
        det = train(mlp(), x_tr, y_tr, seed)
        for name, model in (("none", det),
                            ("shattered-zero", Quantised(det, random=False, seed=seed).eval())):
            grad = evaluate_robustness(model, x, y, eps=[0.1, 0.2],
                                       attacks=["pgd_ce", "pgd_dlr_targeted"], steps=20,
                                       rng=3000 + seed, progress=False)
            best = grad.accuracy.min("attack").values
            for q in budgets:
                sq = evaluate_robustness(model, x, y, eps=[0.1, 0.2], attacks=["square"],
                                         n_queries=q, rng=3000 + seed, progress=False)
                for i, e in enumerate([0.1, 0.2]):
                    rows.append({"seed": seed, "network": name, "n_queries": q, "eps": e,
                                 "square": float(sq.accuracy.isel(eps=i, attack=0)),
                                 "best_gradient": float(best[i])})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n", type=int, default=100, help="test images (the same for every seed)")
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--budgets", type=int, nargs="+", default=[30, 100, 300, 1000])
    ap.add_argument("--budget-seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_digits()
    xa = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    ya = torch.tensor(data.target, dtype=torch.long)
    x_tr, y_tr = xa[:-300], ya[:-300]
    x, y = xa[-args.n:], ya[-args.n:]
    t0, c0 = time.perf_counter(), time.process_time()
    evaluated, outs = [], []
    for seed in range(args.seeds):
        r, o = run_seed(seed, x_tr, y_tr, x, y, args.n_queries)
        evaluated.append(r)
        outs.append(o)
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for seed, r in enumerate(evaluated):
        rows += flag_rows(seed, r, evaluated[(seed + 1) % len(evaluated)])
    df = pd.DataFrame(rows)
    pooled = pooled_every_eps(evaluated)
    # the reproduction's protocol flag, crossed over seeds x images
    d = np.stack([o["single-pass"][0] - o["single-pass"][1] for o in outs])
    ref = np.stack([o["none"][0] - o["none"][1] for o in outs])
    overstate = protocol_excess(d, ref, n_resamples=999, rng=0)
    d_none = np.stack([o["none"][0] - o["none"][1] for o in outs])
    ctrl = protocol_excess(d_none, np.zeros_like(d_none), n_resamples=999, rng=0)
    budget = square_budget(x_tr, y_tr, x, y, args.budgets, list(range(args.budget_seeds)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    write(args, df, overstate, ctrl, budget, wall, cpu, pooled)


def pooled_every_eps(evaluated: list[dict]) -> pd.DataFrame:
    """The every-eps flag as the experiment runs it on its seeds: per network, the per-image
    gaps of every seed stacked (eps, seed, stimulus), crossed bootstrap over seeds x images."""
    rows = []
    for name in evaluated[0]:
        d = np.stack([per_image_gap(r[name], _probe(name)) for r in evaluated], axis=1)
        refs = [np.stack([per_image_gap(r[k]) for r in evaluated], axis=1) for k in _refs(name)]
        e = every_eps_excess(d, refs, tol=TOL, n_resamples=999, rng=0)
        for i, eps in enumerate(EPS):
            rows.append({"network": name, "eps": eps, "excess": e["excess"][i],
                         "ci_low": e["ci_low"][i], "ci_high": e["ci_high"][i],
                         "flagged": bool(e["flagged"][i])})
    return pd.DataFrame(rows)


def write(args, df, overstate, ctrl, budget, wall, cpu, pooled) -> None:
    flags = ["check_masked", "check_masked_ref", "not_chance", "not_near_worst", "beaten_by_square", "not_monotone",
             "flat", "calibrated", "point_every_eps", "every_eps"]
    per_eps = df.groupby("network", sort=False)[
        [f"point@{e:g}" for e in EPS] + [f"every_eps@{e:g}" for e in EPS]].mean()
    pooled_any = pooled.groupby("network", sort=False)["flagged"].any()
    rate = df.groupby("network", sort=False)[flags].mean()
    nums = df.groupby("network", sort=False)[["clean", "probe_acc_max_eps", "worst_max_eps",
                                              "square_max_eps", "max_point_gap",
                                              "gap_minus_ref", "every_eps_max_low"]].mean()
    lines = [
        "# Masking flags: false-positive rate and power",
        "",
        f"`python benchmarks/masking_flags.py --seeds {args.seeds} --n {args.n} "
        f"--n-queries {args.n_queries} --budgets {' '.join(map(str, args.budgets))} "
        f"--budget-seeds {args.budget_seeds}` on {platform.processor() or platform.machine()}, one "
        f"torch thread, machine shared with other jobs: wall {wall:.0f} s, process CPU "
        f"{cpu:.0f} s (max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
        "MiB). Digits 8x8, MLP 64-64-10, "
        f"{args.n} test images shared by every seed; eps (L-inf) {EPS}; PGD 20 steps; "
        f"Square {args.n_queries} queries; noise std {NOISE_STD} after the ReLU (train and test), "
        "EOT 8 and 5 evaluations for the noisy network.",
        "",
        "## Fraction of seeds on which each flag fires",
        "",
        "Rows `none` and `isotropic` are honest networks: every flag there is a false positive. "
        "The other rows are planted masked networks: a flag that does not fire there is a miss. "
        "`check_masked`: `check_robustness_result` names a white-box attack as masked (its "
        "default: the gap to the worst case judged by the lower bound of its Wilson CI, and "
        "not judged at all on a stochastic result without `reference=`); "
        "`check_masked_ref`: the same with `reference=` the next seed's honest network of the "
        "same kind (`none` or `isotropic`) evaluated the same way; `not_chance`, "
        "`not_near_worst` (raw, judged or not), `beaten_by_square`, `not_monotone`: its parts "
        "(without reference); "
        "`flat`: CE-PGD accuracy does not fall as eps grows; `calibrated`: the experiment's "
        "earlier flag (`calibrated_gap_flag`, tol 0.1, largest eps, seed point values); "
        "`point_every_eps`: that point "
        "rule at every eps; `every_eps`: the flag `masking_diagnostics` applies now "
        "(`every_eps_excess`: per image, at every eps, CI lower bound above tol 0.1; one seed "
        "per row, so the bootstrap resamples images only).",
        "",
        rate.to_markdown(floatfmt=".2f"),
        "",
        "### Per eps: fraction of seeds flagged by the point rule and by the CI rule",
        "",
        f"Over {args.seeds} seeds x {len(EPS)} eps = {args.seeds * len(EPS)} (seed, eps) "
        "judgements per network. False-positive rate of the every-eps CI rule on the honest "
        "networks, over seeds and eps: "
        + ", ".join(f"`{k}` {int(df[df.network == k][[f'every_eps@{e:g}' for e in EPS]].values.sum())}"
                    f"/{args.seeds * len(EPS)}" for k in ("none", "isotropic"))
        + "; of the point rule at every eps: "
        + ", ".join(f"`{k}` {int(df[df.network == k][[f'point@{e:g}' for e in EPS]].values.sum())}"
                    f"/{args.seeds * len(EPS)}" for k in ("none", "isotropic"))
        + ".",
        "",
        per_eps.to_markdown(floatfmt=".2f"),
        "",
        "### The every-eps flag pooled over the seeds (crossed bootstrap, seeds x images)",
        "",
        "As `masking_diagnostics` runs it on an experiment's seeds: per network and eps the "
        "excess of the probed attack's per-image gap to the worst case over the reference "
        "network's, its CI (97.5% per eps = 95% family-wise over 4 eps), flagged where the "
        "lower bound exceeds 0.1. Networks flagged at any eps: "
        + ", ".join(f"`{k}` {'yes' if v else 'no'}" for k, v in pooled_any.items()) + ".",
        "",
        pooled.to_markdown(index=False, floatfmt=".3f"),
        "",
        "Mean over seeds of the numbers behind them (accuracy of the probed white-box attack "
        "(`pgd_ce`, for `single-pass` `pgd_ce_1pass`), the worst case and Square at the "
        "largest eps; the probed attack's gap to the worst case minus the reference "
        "networks' gap):",
        "",
        nums.to_markdown(floatfmt=".3f"),
        "",
        "## The reproduction's protocol flag (crossed bootstrap, seeds x images)",
        "",
        f"- `single-pass` (isotropic network, CE-PGD on one noise draw, one evaluation) minus the "
        f"adaptive worst case, beyond the same on `none`: {overstate['excess']:+.3f} "
        f"[{overstate['ci_low']:+.3f}, {overstate['ci_high']:+.3f}] -> "
        f"{'FLAGGED' if overstate['overstates'] else 'not flagged'}.",
        f"- control: `none` against itself (the flag's null): {ctrl['excess']:+.3f} "
        f"[{ctrl['ci_low']:+.3f}, {ctrl['ci_high']:+.3f}] -> "
        f"{'FLAGGED' if ctrl['overstates'] else 'not flagged'}.",
        "",
        "## Square's budget",
        "",
        "Accuracy under Square beside the best gradient attack (mean over "
        f"{budget['seed'].nunique()} seeds):",
        "",
        budget.groupby(["network", "eps", "n_queries"])[["square", "best_gradient"]].mean()
        .to_markdown(floatfmt=".3f"),
        "",
        "## One message per planted network (first seed)",
        "",
    ]
    for name in ("shattered-zero", "shattered-random", "single-pass"):
        msg = df[(df["network"] == name)]["message"].iloc[0]
        lines.append(f"- `{name}`: {msg or '(no message)'}")
    lines.append("")
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
