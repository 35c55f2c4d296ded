"""The bench's trust measurements: calibration (expected calibration error,
log-loss), reliability diagrams and abstention curves, per method and shot
count. Called by :mod:`._bench`; one record's measurements come from
:func:`trust_measurements`.
"""

import numpy as np

from ._trust import (
    KEPT_FRACTIONS,
    abstention_curve,
    expected_calibration_error,
    log_loss_of,
    reliability_curve,
)

#: Confidence bins of the calibration error and the reliability diagrams.
N_BINS = 15


def trust_measurements(estimator, X_test, y_test):
    """``{ece, log_loss, reliability, abstention}`` of a fitted classifier's
    ``predict_proba`` on the test images (plain lists: JSON-ready).
    """
    proba = estimator.predict_proba(X_test)
    classes = estimator.classes_
    confidence, accuracy, count = reliability_curve(
        y_test, proba, classes=classes, n_bins=N_BINS
    )
    kept_accuracy, _ = abstention_curve(y_test, proba, classes=classes)
    return dict(
        ece=expected_calibration_error(y_test, proba, classes=classes, n_bins=N_BINS),
        log_loss=log_loss_of(y_test, proba, classes),
        # Per bin: summed confidence and hits, so that draws pool exactly.
        reliability=dict(
            count=count.tolist(),
            confidence_sum=np.nan_to_num(confidence * count).tolist(),
            hits=np.nan_to_num(accuracy * count).round().astype(int).tolist(),
        ),
        abstention=kept_accuracy.tolist(),
    )


def _by_method_and_shots(records):
    table = {}
    for record in records:
        if "ece" in record and record.get("load") is None:
            table.setdefault(record["method"], {}).setdefault(
                record["shots"], []
            ).append(record)
    return table


def calibration_table(records, shots):
    """Markdown: ECE and log-loss, mean ± std over draws, per method and shot."""
    header = "| method | " + " | ".join(f"{n} shots" for n in shots) + " |"
    lines = [header, "|---" * (len(shots) + 1) + "|"]
    for method, by_shot in _by_method_and_shots(records).items():
        cells = []
        for n in shots:
            if n not in by_shot:
                cells.append("-")
                continue
            ece = np.array([r["ece"] for r in by_shot[n]])
            loss = np.array([r["log_loss"] for r in by_shot[n]])
            cells.append(f"{ece.mean():.3f} ± {_std(ece):.3f} / {loss.mean():.2f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def abstention_table(records, n_shots):
    """Markdown: accuracy (%) on the kept images against the fraction kept,
    per method, at ``n_shots`` (mean over draws).
    """
    header = "| method | " + " | ".join(f"{f:.0%} kept" for f in KEPT_FRACTIONS)
    lines = [header + " |", "|---" * (len(KEPT_FRACTIONS) + 1) + "|"]
    for method, by_shot in _by_method_and_shots(records).items():
        if n_shots not in by_shot:
            continue
        curve = np.mean([r["abstention"] for r in by_shot[n_shots]], axis=0)
        lines.append(
            f"| {method} | " + " | ".join(f"{100 * a:.1f}" for a in curve) + " |"
        )
    return "\n".join(lines)


def _std(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def plot_trust(records, shots, title, path):
    """One figure: a reliability diagram per shot count (every method, draws
    pooled) and the abstention curves at the smallest and largest shots.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _by_method_and_shots(records)
    shown = [n for n in shots if any(n in by_shot for by_shot in table.values())]
    if not shown:
        return
    ends = sorted({shown[0], shown[-1]})
    n_panels = len(shown) + len(ends)
    fig, axes = plt.subplots(1, n_panels, figsize=(3.2 * n_panels, 3.6), squeeze=False)
    axes = axes[0]
    colours = plt.get_cmap("tab20").colors
    for i, (method, by_shot) in enumerate(table.items()):
        colour = colours[(2 * i) % 20 + (i // 10) % 2]
        for ax, n in zip(axes, shown):
            if n not in by_shot:
                continue
            parts = [r["reliability"] for r in by_shot[n]]
            count = np.sum([p["count"] for p in parts], axis=0)
            filled = count > 0
            conf = np.sum([p["confidence_sum"] for p in parts], axis=0)[filled]
            hits = np.sum([p["hits"] for p in parts], axis=0)[filled]
            ax.plot(
                conf / count[filled],
                hits / count[filled],
                marker=".",
                color=colour,
                label=method,
            )
        for ax, n in zip(axes[len(shown) :], ends):
            if n not in by_shot:
                continue
            curve = np.mean([r["abstention"] for r in by_shot[n]], axis=0)
            ax.plot(
                100 * np.asarray(KEPT_FRACTIONS),
                100 * curve,
                marker=".",
                color=colour,
                label=method,
            )
    for ax, n in zip(axes, shown):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence (top label)",
            ylabel="accuracy",
            title=f"reliability, {n} shots",
        )
        ax.grid(alpha=0.3)
    for ax, n in zip(axes[len(shown) :], ends):
        ax.invert_xaxis()
        ax.set(
            xlabel="images kept (%)",
            ylabel="accuracy on kept (%)",
            title=f"abstention, {n} shots",
        )
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_trust(records, shots, name, out):
    """Print the calibration and abstention tables and write the plot
    ``<out>/<name>_trust.png``.
    """
    if not _by_method_and_shots(records):
        return
    print(
        f"\n## {name}: expected calibration error ({N_BINS} bins, mean ± std over "
        "draws) / log-loss, on the test images\n"
    )
    print(calibration_table(records, shots))
    for n in sorted({shots[0], shots[-1]}):
        print(
            f"\n## {name}: accuracy (%) on the most confident images against the "
            f"fraction kept, {n} shots (mean over draws)\n"
        )
        print(abstention_table(records, n))
    try:
        plot_trust(
            records,
            shots,
            f"{name}: reliability (draws pooled) and abstention",
            out / f"{name}_trust.png",
        )
    except ImportError:
        pass  # the accuracy plot already said that matplotlib is missing
