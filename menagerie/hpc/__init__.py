"""HPC helpers: a throw-away SLURM cluster for tests (cluster.py)."""
