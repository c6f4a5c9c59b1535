"""Guest drivers: one per device class, unchanged over every assignment backend."""


# Here rather than in nvme.py: a compiled (mypyc) module cannot define a subclass of a
# built-in exception type, and this package's __init__ stays pure Python.
class NvmeError(RuntimeError):
    """The controller refused bring-up or an admin command (a driver bug or a bad device)."""
