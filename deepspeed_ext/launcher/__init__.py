"""The `deepspeed` launcher: runner.py (the CLI), launch.py (one node's ranks), hostfile.py
(hosts, slots, --include / --exclude) and multinode.py (pdsh / mpirun / srun command lines)."""
