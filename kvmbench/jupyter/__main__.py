"""``python -m kvmbench.jupyter -f CONNECTION_FILE``: start the kernel."""

from ipykernel.kernelapp import IPKernelApp

from kvmbench.jupyter.kernel import KvmbenchKernel

if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=KvmbenchKernel)
