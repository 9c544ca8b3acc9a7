"""``python -m visrec_client``: the ``visrec`` command without its console script."""

import sys

from visrec_client.cli import main

sys.exit(main())
