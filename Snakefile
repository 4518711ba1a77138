# menagerie: data -> sft -> dpo -> merge -> evaluate -> leaderboard, for every recipe in config.yaml.
#   snakemake --cores all                                  # the default recipe (config key `recipe`)
#   snakemake --cores all results/tulu2-dpo-7b/eval.json   # any recipe
#   snakemake --cores all --configfile=my.yaml --config=recipe=my-recipe  # or: make run RECIPE=my-recipe CONFIG=my.yaml
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# `snakemake --report report.html` (make report): this page's text, the loss curves and the leaderboard
report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/merge.smk"
include: "rules/evaluate.smk"
include: "rules/leaderboard.smk"


rule all:
    default_target: True
    input:
        JOBS.recipe_outputs(CONFIG["recipe"]),
        "results/leaderboard.json",
