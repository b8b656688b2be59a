"""``python -m pyro_bnn``: the same as the ``pyro-bnn`` command."""

from .cli import main

raise SystemExit(main())
