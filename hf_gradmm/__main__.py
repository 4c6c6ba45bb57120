"""``python -m hf_gradmm`` runs the ``hf-gradmm`` command line."""

import sys

from hf_gradmm.cli import main

sys.exit(main())
