"""``python -m hf_gradmm.cli``: what ``accelerate launch`` runs in each process."""

import sys

from hf_gradmm.cli.main import main

sys.exit(main())
