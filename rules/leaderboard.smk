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
        # the page and its charts are results of `snakemake --report` (make report), category Leaderboard
        html=report("results/leaderboard.html", caption="report/leaderboard.rst", category="Leaderboard",
                    labels={"result": "leaderboard (all recipes)"}),
        charts=report(directory("results/leaderboard"), patterns=["{suite}.png"],
                      caption="report/leaderboard_chart.rst", category="Leaderboard",
                      labels={"result": "chart of suite {suite}"}),
    log:
        "logs/leaderboard.log",
    container: CONTAINERS.get("train")
    shell:
        JOBS.run_stage("scripts/evaluate.py leaderboard --json {output.json} --md {output.md} --html {output.html} "
                       "--charts {output.charts} {input.evals}")
