import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))  # shared builders (tests/pci_builders.py)

# Property tests draw the same examples on every run, so a CI run is reproducible; set
# PASSTHRU_HYPOTHESIS=explore to let hypothesis search with fresh random seeds.
settings.register_profile("reproducible", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("PASSTHRU_HYPOTHESIS", "reproducible"))
