# results/leaderboard.{json,md,html} and results/leaderboard/<suite>.png: every recipe built so far, plus the one
# this run builds. The charts directory is written whole (atomically), so it exists only when complete.


rule leaderboard:
    input:
        evals=JOBS.leaderboard_inputs,
        # built first, so that the page links it (the v1 files of other recipes are linked when they exist)
        openllm_v1=JOBS.leaderboard_openllm_v1,
    output:
        json="results/leaderboard.json",
        md="results/leaderboard.md",
        html="results/leaderboard.html",
        charts=directory("results/leaderboard"),
    log:
        "logs/leaderboard.log",
    container: CONTAINERS.get("train")
    shell:
        JOBS.run_stage("scripts/evaluate.py leaderboard --json {output.json} --md {output.md} --html {output.html} "
                       "--charts {output.charts} {input.evals}")
