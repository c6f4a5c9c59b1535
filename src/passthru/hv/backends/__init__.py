"""Block I/O paths built on the host model; each implements ``scenarios.io_path.IoPath``.

``nvme_paths``: bare metal, passthrough and emulated NVMe, plus the ``PATHS`` registry that
other backends (virtio-blk) join through ``register_path``.
"""
