"""``fedledger bench robustness``: poisoning attacks against robust aggregation, final accuracy.

The experiment (:mod:`fedledger.sim.robustness`) trains the same federated job once
per attack x defence x attacker fraction, plus once without attackers per defence;
the clean run with plain FedAvg is the baseline. Each cell reports the final test
accuracy and ``delta``, its difference from the clean FedAvg accuracy (negative:
worse). ``fedavg_at_30`` is plain FedAvg with 30 % attackers, ``best_defence_at_30``
the defence with the highest accuracy there (ties to the first in the defence list),
for each attack.

Like every benchmark, the last line of stdout is exactly one JSON object.
"""

from __future__ import annotations

import io
import math
import platform
import textwrap
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedledger.errors import UsageError
from fedledger.sim.robustness import (
    ATTACKS,
    CLEAN,
    DEFENCES,
    GAUSSIAN_SIGMA,
    SIGN_FLIP_SCALE,
    RobustnessConfig,
    RobustnessOutcome,
    run_robustness,
)

AT = 0.3
"""The attacker fraction of ``fedavg_at_30`` and ``best_defence_at_30``."""


@dataclass(frozen=True)
class Size:
    """Defaults of a grid size: devices, cloud rounds, local epochs and attacker fractions."""

    devices: int
    rounds: int
    epochs: int
    fractions: tuple[float, ...]


FULL = Size(devices=20, rounds=10, epochs=2, fractions=(0.1, 0.2, AT))
QUICK = Size(devices=10, rounds=3, epochs=1, fractions=(AT,))


@dataclass(frozen=True)
class Options:
    """The grid to run, and whether it is the ``--quick`` size."""

    config: RobustnessConfig
    quick: bool


def _names(value: str | None, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma-separated list of names (None: all of ``known``); UsageError for an unknown one."""
    if value is None:
        return known
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(f"unknown {what} {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    return names


def options(model: str, dataset: str, devices: int | None, edges: int, rounds: int | None, epochs: int | None,
            partition: str, seed: int, tolerate: float, attacks: str | None, defences: str | None,
            quick: bool) -> Options:
    """Command-line values to :class:`Options`; ``--quick`` shrinks what was not given."""
    size = QUICK if quick else FULL
    config = RobustnessConfig(
        model=model, dataset=dataset,
        devices=size.devices if devices is None else devices, edges=edges,
        rounds=size.rounds if rounds is None else rounds, epochs=size.epochs if epochs is None else epochs,
        partition=partition, seed=seed, tolerate=tolerate,
        attacks=_names(attacks, ATTACKS, "attack"), defences=_names(defences, DEFENCES, "defence"),
        fractions=size.fractions,
    )
    return Options(config, quick)


def run(opts: Options, console: Console) -> dict[str, Any]:
    """Run the grid with a progress bar on ``console``; the JSON result."""
    t0 = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("robustness", total=None)

        def step(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        outcome = run_robustness(opts.config, step)
    return {**summary(outcome), "quick": opts.quick, "python": platform.python_version(),
            "seconds": round(time.perf_counter() - t0, 2)}


def _r(x: float) -> float:
    return round(x, 4)


def summary(out: RobustnessOutcome) -> dict[str, Any]:
    """The JSON keys describing the grid and its results (see the module docstring)."""
    cfg = out.config
    clean = out.clean()
    results = [
        {"attack": c.attack, "defence": c.defence, "fraction": c.fraction, "attackers": c.attackers,
         "accuracy": _r(c.accuracy), "delta": _r(c.accuracy - clean), "collapsed": c.collapsed,
         "rejected_attackers": None if c.rejected_attackers is None else _r(c.rejected_attackers)}
        for c in out.cells if c.attack != CLEAN
    ]
    fedavg_at: dict[str, Any] = {}
    best_at: dict[str, Any] = {}
    if any(math.isclose(f, AT) for f in cfg.fractions):
        for attack in cfg.attacks:
            if "fedavg" in cfg.defences:
                acc = out.cell(attack, "fedavg", AT).accuracy
                fedavg_at[attack] = {"accuracy": _r(acc), "delta": _r(acc - clean)}
            others = [d for d in cfg.defences if d != "fedavg"]
            if others:
                best = max(others, key=lambda d: (out.cell(attack, d, AT).accuracy, -others.index(d)))
                acc = out.cell(attack, best, AT).accuracy
                best_at[attack] = {"defence": best, "accuracy": _r(acc), "delta": _r(acc - clean)}
    return {
        "bench": "robustness",
        "clean_accuracy": _r(clean),
        "clean_by_defence": {d: _r(out.clean(d)) for d in cfg.defences},
        "results": results,
        "fedavg_at_30": fedavg_at,
        "best_defence_at_30": best_at,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "devices": cfg.devices,
        "edges": cfg.edges,
        "rounds": cfg.rounds,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "momentum": cfg.momentum,
        "partition": cfg.partition,
        "seed": cfg.seed,
        "tolerate": cfg.tolerate,
        "f": cfg.f,
        "fractions": list(cfg.fractions),
        "attacks": list(cfg.attacks),
        "defences": list(cfg.defences),
        "attack_params": {"sign_flip_scale": SIGN_FLIP_SCALE, "gaussian_sigma": _r(GAUSSIAN_SIGMA),
                          "boost": "devices / attackers",
                          "alie_z": {f"{frac:g}": _r(z) for frac, z in out.alie_z.items()}},
    }


def _cells(r: dict[str, Any]) -> dict[tuple[str, str, float], dict[str, Any]]:
    return {(x["attack"], x["defence"], x["fraction"]): x for x in r["results"]}


def _best(r: dict[str, Any]) -> set[tuple[str, str, float]]:
    """The cells with the highest accuracy of their attack and fraction (all of them on a tie)."""
    cells = _cells(r)
    out = set()
    for attack in r["attacks"]:
        for frac in r["fractions"]:
            top = max(cells[(attack, d, frac)]["accuracy"] for d in r["defences"])
            out |= {(attack, d, frac) for d in r["defences"] if cells[(attack, d, frac)]["accuracy"] == top}
    return out


def _value(x: dict[str, Any]) -> str:
    mark = " collapsed" if x["collapsed"] else ""
    return f"{x['accuracy']:.3f} ({100 * x['delta']:+.1f}){mark}"


def _caption(r: dict[str, Any]) -> str:
    clean = ", ".join(f"{d} {a:.3f}" for d, a in r["clean_by_defence"].items())
    return (f"{r['model']} on {r['dataset']} ({r['partition']}), {r['devices']} devices over {r['edges']} "
            f"edge(s), {r['rounds']} rounds x {r['epochs']} epochs, seed {r['seed']}; defences provisioned "
            f"for f = {r['f']} attackers per edge. Cells: final test accuracy (points vs clean FedAvg "
            f"{r['clean_accuracy']:.3f}); best of each attack and fraction marked. "
            f"Without attackers: {clean}.")


def table(r: dict[str, Any]) -> str:
    """The Rich table: one row per attack and defence, one column per attacker fraction (best marked ``*``)."""
    cells, best = _cells(r), _best(r)
    t = Table()
    t.add_column("attack")
    t.add_column("defence")
    for frac in r["fractions"]:
        t.add_column(f"{frac:.0%} attackers", justify="right")
    for i, attack in enumerate(r["attacks"]):
        for j, d in enumerate(r["defences"]):
            row = [_value(cells[(attack, d, f)]) + (" *" if (attack, d, f) in best else "  ")
                   for f in r["fractions"]]
            last = j == len(r["defences"]) - 1 and i < len(r["attacks"]) - 1
            t.add_row(attack if j == 0 else "", d, *row, end_section=last)
    buf = io.StringIO()
    Console(file=buf, width=120, force_terminal=False, color_system=None).print(t)
    title = f"bench robustness: final test accuracy under poisoning (clean FedAvg {r['clean_accuracy']:.3f})"
    return "\n".join([title, buf.getvalue().rstrip("\n"), *textwrap.wrap(_caption(r), 110)])


def markdown(r: dict[str, Any]) -> str:
    """The same table in Markdown (best cells in bold), for the README."""
    cells, best = _cells(r), _best(r)
    head = ["attack", "defence", *(f"{f:.0%} attackers" for f in r["fractions"])]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(r["fractions"])) + "|"]
    for attack in r["attacks"]:
        for d in r["defences"]:
            vals = [_value(cells[(attack, d, f)]) for f in r["fractions"]]
            vals = [f"**{v}**" if (attack, d, f) in best else v for v, f in zip(vals, r["fractions"], strict=True)]
            lines.append("| " + " | ".join([attack, d, *vals]) + " |")
    return "\n".join([*lines, "", _caption(r)])
