"""Guest drivers: one per device class, unchanged over every assignment backend."""
