"""Short import name: ``import actstore`` is ``activation_store``."""
import sys

import activation_store

sys.modules[__name__] = activation_store
