"""The kvmbench Jupyter kernel: gdb-style magics, stop cards, kernelspec."""
