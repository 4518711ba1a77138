# results/leaderboard.{json,md}: every recipe built so far, plus the one this run builds.
import glob


def leaderboard_inputs(wildcards):
    built = set(glob.glob("results/*/eval.json"))
    built.add(f"results/{CONFIG['recipe']}/eval.json")
    return sorted(built)


rule leaderboard:
    input:
        leaderboard_inputs,
    output:
        json="results/leaderboard.json",
        md="results/leaderboard.md",
    log:
        "logs/leaderboard.log",
    container: CONTAINERS.get("train")
    shell:
        run_stage("scripts/evaluate.py leaderboard --json {output.json} --md {output.md} {input}")
