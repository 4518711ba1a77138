"""The contamination gate: find training rows that overlap the test items of a recipe's eval tasks.

Modules in the order they import each other (each imports only those above it; tests/test_layers.py checks it):

    records     Match, Candidate (typed pairs) and Run (counts and phase timings of one run)
    text        words, number words, units, operation words, content terms: how every stage reads text
    arrays      chunking, 64-bit token hashes, memoised per-token values, concatenated ranges (numpy)
    shards      map_shards: row ranges in forked worker processes (results independent of the workers)
    guard       the numbers, units, operations and names a copy or paraphrase of an item must keep
    ngram       word n-gram method (questions and text answers, whole rows)
    code_match  normalised-token method for code answers (HumanEval solutions, renamed and reformatted)
    candidates  lexical candidates: which (row, item) pairs are worth embedding, and the window to embed
    embedding   MiniLM cosine of the candidates (menagerie/data/embeddings.py encodes)
    items       the eval items of a recipe's suites (questions, distinctive answers); a training row's two texts
    gate        the stage: eval items from the recipe's suites, the methods per part, the report, the action

Nothing is imported here: callers import the module they need (scripts/prepare_data.py: items and gate).
"""
