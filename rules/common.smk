# The resolved config and the names every rule file uses; the functions rules call are menagerie/jobs.py. No rules.
import sys

from menagerie.jobs import (Jobs, STAGE_WILDCARD, config_or_exit, exit_if_multi_node_in_images, export_git_commit,
                            note_unpinned_hub_datasets, one_of, write_resolved_config)

# validated, defaults filled; every stage of every recipe fits its declared GPUs/host memory (`make plan`)
CONFIG = config_or_exit(config)
JOBS = Jobs.for_workflow(CONFIG, workflow)
# stage scripts read the resolved config from this content-addressed dump (menagerie.jobs.write_resolved_config)
RESOLVED_CONFIG = write_resolved_config(CONFIG)
CONTAINERS = CONFIG.get("containers") or {}  # stage -> Apptainer image; rules' `container:` (only with --sdm apptainer)
export_git_commit(workflow.basedir)
note_unpinned_hub_datasets(CONFIG, sys.argv)
exit_if_multi_node_in_images(CONFIG, JOBS.apptainer)  # images have no srun; reads the targets from the command line


wildcard_constraints:
    recipe="[A-Za-z0-9._-]+",
    model="[A-Za-z0-9._-]+",
    dataset="[A-Za-z0-9._-]+",
    stage="sft|dpo",
    model_key="[A-Za-z0-9._@-]+",
    suite_hash="[0-9a-f]{16}",
