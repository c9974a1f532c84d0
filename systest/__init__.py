"""System-test harness: a Debian guest under QEMU with a virtio-serial agent.

Test-only code; nothing here is part of the installed product.
"""
