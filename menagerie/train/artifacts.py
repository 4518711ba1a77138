"""What a training stage publishes besides its weights: the trainer log, the loss curve and the model card."""

from __future__ import annotations

import json
from pathlib import Path


def plot_loss_curve(log_history: list[dict], path: Path, title: str) -> dict[str, int]:
    """Train loss per logged step and validation loss per evaluation, one PNG; returns the points per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    val = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="train")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"train": len(train), "validation": len(val)}


def save_artifacts(trainer, tokenizer, out_dir: Path, chat_template: str | None, card: list[str], title: str) -> dict:
    """Model or adapter weights, tokenizer (with the recipe's chat template), log, loss curve, model card."""
    trainer.save_model(str(out_dir))
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(out_dir))
    history = trainer.state.log_history
    (out_dir / "trainer_log.json").write_text(json.dumps(history, indent=1) + "\n")
    plot_loss_curve(history, out_dir / "loss_curve.png", title)
    final = {"global_step": trainer.state.global_step,
             "train_loss": next((e["train_loss"] for e in reversed(history) if "train_loss" in e), None),
             "best_eval_loss": trainer.state.best_metric, "best_checkpoint": trainer.state.best_model_checkpoint}
    evals = [e["eval_loss"] for e in history if "eval_loss" in e]
    if evals:
        final["last_eval_loss"] = evals[-1]
    from menagerie.models import model_card

    lines = [*card, "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in final.items() if v is not None]
    (out_dir / "README.md").write_text(model_card(title, lines))
    return final
