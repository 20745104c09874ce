"""Linux guests under QEMU: Debian's kernel image, the run-time initramfs
with kvmbench's own init, cold boots and snapshots, kernel symbols with
KASLR, drgn over the live guest, and the TCG counting plugin."""
