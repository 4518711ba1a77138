"""HPC helpers the package uses: lockfile.py (the uv lock exported per stage: containers, conda envs). The test
cluster and the .def parser are test tooling: tests/slurm_cluster.py, tests/deffile.py."""
