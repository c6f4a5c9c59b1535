"""Device models (``hw`` layer): each issues DMA through a port and knows nothing about VMs.

``nvme``: an NVMe controller at register level (NVMe Base Specification 2.0).
``virtio``: virtio devices (virtio-blk) and their virtqueues.
"""
