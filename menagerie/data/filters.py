"""Birbal's data filters ([BB] §3; [BBc] data_prep/combine_datasets.py, prepare_math_reasoning_dataset.py).

A recipe turns them on with `data.sft.filters`; each works on the row's Birbal fields (formats.birbal_fields:
with a context, instruction = the user message and input = the context; without one, the instruction is empty and
the user message is the input, as [BBc] lays out LIMA and MathInstruct rows):

  single_turn       keep the first user message and the reply to it ([BBc] prepare_lima_file: conversations[0]
                    and [1]); system messages are dropped (Birbal's prompts have none)
  max_prompt_words  drop a row whose instruction + input has more words ([BB]: "<= 800 words")
  min_input_words   drop a row whose input has fewer words ([BB]: "input > 4 words", i.e. min 5)
  dedup_input       drop a row whose input equals (exactly) the input of a row kept before it

The first three are per-row and run on each source before it is sampled, so a source's `count` is drawn from
rows that pass; dedup_input runs on the combined mixture, first occurrence (in source order) kept. LLM-generated
rows are excluded per source by origin (mixture items' `exclude_origins` / `origins`, see mixture.py).

Words are whitespace-separated tokens (`str.split()`). [BBc] counts `text.split(" ")` (single spaces; a newline
does not separate words, an empty instruction adds one empty token) and uses `< 800` for some sources and
`<= 800` for others; the paper's "<= 800 words" and whitespace words are used here.
"""

from __future__ import annotations

from menagerie.formats import birbal_fields

FILTER_KEYS = ("single_turn", "max_prompt_words", "min_input_words", "dedup_input")


def words(text: str) -> int:
    return len(text.split())


def fields(row: dict) -> tuple[str, str]:
    """(instruction, input) of a canonical sft row: its first user message and context, in Birbal's layout."""
    user = next((m["content"] for m in row["messages"] if m["role"] == "user"), "")
    return birbal_fields(user, row.get("context"))


def single_turn(row: dict) -> dict:
    """The row cut to its first user message and the assistant reply that follows it (unchanged if already so)."""
    messages = row["messages"]
    first = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if first is None or first + 1 >= len(messages) or messages[first + 1]["role"] != "assistant":
        return row  # nothing to answer: left to the chat format, which rejects it with the row id
    kept = messages[first : first + 2]
    return row if kept == messages else {**row, "messages": kept}


def row_filters(rows: list[dict], settings: dict) -> tuple[list[dict], dict[str, int]]:
    """Apply the per-row filters in `settings`; returns (kept rows, rows dropped per filter)."""
    dropped = {key: 0 for key in ("max_prompt_words", "min_input_words") if settings.get(key)}
    kept = []
    for row in rows:
        if settings.get("single_turn"):
            row = single_turn(row)
        instruction, given = fields(row)
        if settings.get("max_prompt_words") and words(instruction) + words(given) > settings["max_prompt_words"]:
            dropped["max_prompt_words"] += 1
        elif settings.get("min_input_words") and words(given) < settings["min_input_words"]:
            dropped["min_input_words"] += 1
        else:
            kept.append(row)
    return kept, dropped


def dedup_inputs(rows: list[dict]) -> list[dict]:
    """Rows whose input (Birbal fields) differs from every earlier kept row's, in order."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = fields(row)[1]
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept
