"""What a training stage publishes besides its weights: the trainer log, the loss curve and the model card.

Everything here reads the trainer's `log_history`, which Trainer saves in every checkpoint's trainer_state.json and
restores on resume: after a kill and a resume it holds the logged steps of every attempt, so the card's train loss
covers the whole run, not only the last attempt (Trainer's own `train_loss` averages the last attempt's steps only).
"""

from __future__ import annotations

import json
from pathlib import Path

LOSS_DIGITS = 4  # losses in the card (the stage's metrics in provenance.json keep full precision)


def card_value(value) -> str:
    """A metric as the card shows it: losses rounded to LOSS_DIGITS decimals, everything else as is."""
    return f"{value:.{LOSS_DIGITS}f}" if isinstance(value, float) else str(value)


def train_loss_over_steps(log_history: list[dict]) -> float | None:
    """Mean train loss over all optimizer steps of the run, every attempt included.

    Each logged `loss` is the mean over the steps since the previous log, so it is weighted by that many steps. A
    step logged twice (an attempt that logged past its last checkpoint, then the resumed one) counts once, with the
    latest value (the one on the trajectory of the published weights).
    """
    by_step: dict[int, float] = {}
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            by_step[int(entry["step"])] = float(entry["loss"])
    total, previous, steps = 0.0, 0, 0
    for step in sorted(by_step):
        weight = step - previous
        total += by_step[step] * weight
        steps += weight
        previous = step
    return total / steps if steps else None


def evaluate_at_end(trainer) -> bool:
    """Evaluate the final weights once when the run has a validation set but logged no validation loss at its last
    step (no `eval_steps`, or a last step between evaluations); returns whether it evaluated."""
    if getattr(trainer, "eval_dataset", None) is None:
        return False
    step = trainer.state.global_step
    if any("eval_loss" in e and e.get("step") == step for e in trainer.state.log_history):
        return False
    trainer.evaluate()
    return True


def plot_loss_curve(log_history: list[dict], path: Path, title: str) -> dict[str, int]:
    """Train loss per logged step and validation loss per evaluation, one PNG; returns the points per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = sorted({e["step"]: e["loss"] for e in log_history if "loss" in e}.items())
    val = sorted({e["step"]: e["eval_loss"] for e in log_history if "eval_loss" in e}.items())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="train")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(loc="upper left")
    margins = {
        name: [(e["step"], e[key]) for e in log_history if key in e]
        for name, key in (("train", "rewards/margins"), ("validation", "eval_rewards/margins"))
    }
    if any(margins.values()):  # DPO: reward margin (chosen - rejected) on a second axis
        right = ax.twinx()
        for name, points in margins.items():
            if points:
                right.plot(
                    *zip(*points),
                    linestyle="--",
                    marker="." if name == "validation" else None,
                    label=f"{name} reward margin",
                )
        right.set_ylabel("reward margin")
        right.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"train": len(train), "validation": len(val)}


def settings_rows(stage: dict, batch: dict) -> list[tuple[str, str]]:
    """(setting, value) rows of the card: what a reader needs to reproduce or compare the run."""
    warmup = (
        f"warmup {stage['warmup_steps']:g} steps"
        if stage.get("warmup_steps")
        else f"warmup {stage['warmup_ratio']:g} of the steps"
        if stage.get("warmup_ratio")
        else "no warmup"
    )
    rows = [
        ("method", stage["method"]),
        ("learning rate", f"{stage['learning_rate']:g} ({stage['lr_scheduler']} schedule, {warmup})"),
        (
            "global batch",
            f"{batch['global_batch_size']} = {batch['micro_batch_size']} per device x "
            f"{batch['gradient_accumulation_steps']} accumulation x {batch['processes']} "
            f"process(es)",
        ),
        (
            "length",
            f"{stage['epochs']:g} epoch(s)"
            + (f", at most {stage['max_steps']} steps" if stage.get("max_steps") else ""),
        ),
        ("max sequence length", str(stage["max_seq_length"])),
        ("precision", stage["precision"]),
    ]
    if stage["method"] != "full":
        lora = stage["lora"]
        targets = lora["target_modules"]
        targets = ", ".join(targets) if isinstance(targets, list) else str(targets)
        rows.append(("LoRA", f"r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']:g}, targets {targets}"))
        if stage.get("quantization"):
            rows.append(("quantization", f"{stage['quantization']['bits']}-bit"))
    if stage.get("beta") is not None:
        rows.append(("DPO beta", f"{stage['beta']:g}"))
    return rows


def final_metrics(trainer, evaluated_at_end: bool) -> dict:
    history = trainer.state.log_history
    evals = [e["eval_loss"] for e in history if "eval_loss" in e]
    final = {
        "global_step": trainer.state.global_step,
        "train_loss": train_loss_over_steps(history),
        "train_loss_steps": len({e["step"] for e in history if "loss" in e}),
        "best_eval_loss": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
    }
    if evals:
        final["last_eval_loss"] = evals[-1]
        final["eval_loss_points"] = len(evals)
        final["eval_at_end_only"] = evaluated_at_end and len(evals) == 1
    return final


def save_artifacts(
    trainer,
    tokenizer,
    out_dir: Path,
    chat_template: str | None,
    card: list[str],
    title: str,
    stage: dict | None = None,
    batch: dict | None = None,
) -> dict:
    """Model or adapter weights, tokenizer (with the recipe's chat template), log, loss curve, model card.

    With a validation set and no validation loss at the last step, the final weights are evaluated first, so the
    card, the metrics and the loss curve carry a validation loss whenever the card announces validation rows.
    """
    evaluated_at_end = evaluate_at_end(trainer)
    trainer.save_model(str(out_dir))
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(out_dir))
    history = trainer.state.log_history
    (out_dir / "trainer_log.json").write_text(json.dumps(history, indent=1) + "\n")
    plot_loss_curve(history, out_dir / "loss_curve.png", title)
    final = final_metrics(trainer, evaluated_at_end)
    for prefix, key in (("rewards/", "train"), ("eval_rewards/", "eval")):  # DPO: trl's implicit-reward metrics
        logged = [e for e in history if f"{prefix}accuracies" in e]
        if logged:
            final[f"{key}_reward_accuracy"] = logged[-1][f"{prefix}accuracies"]
            final[f"{key}_reward_margin"] = logged[-1].get(f"{prefix}margins")
    from menagerie.models import model_card

    lines = list(card)
    if stage is not None and batch is not None:
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in settings_rows(stage, batch)]
    labels = {
        "train_loss": f"train loss (mean over all {final['train_loss_steps']} logged steps, every attempt)",
        "last_eval_loss": "validation loss (last evaluation"
        + (", at the end of training)" if final.get("eval_at_end_only") else ")"),
        "best_eval_loss": "best validation loss",
        "global_step": "optimizer steps",
        "best_checkpoint": "best checkpoint",
        "train_reward_accuracy": "DPO reward accuracy (last train window)",
        "train_reward_margin": "DPO reward margin, chosen - rejected (last train window)",
        "eval_reward_accuracy": "DPO reward accuracy (validation pairs)",
        "eval_reward_margin": "DPO reward margin, chosen - rejected (validation pairs)",
    }
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {labels[k]} | {card_value(v)} |" for k, v in final.items() if k in labels and v is not None]
    (out_dir / "README.md").write_text(model_card(title, lines))
    return final
