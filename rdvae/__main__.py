"""`python -m rdvae`: the same command line as the `rdvae` script."""

import sys

from rdvae.cli import main

sys.exit(main())
