"""``python -m activation_store`` is the ``actstore`` command."""
from .cli import main

main()
